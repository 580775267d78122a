"""Fixtures for the Azure tests: the dev stack's CA trusted by requests (msal and
azure-identity), and the hop the bridge runs, on the stack's Entra emulator."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from bridge.clouds.azure.config import AzureHopConfig
from bridge.clouds.azure.entra import EntraHop, EntraHttp
from bridge.devstack import AZURE_CLIENT_ID, AZURE_STORAGE_SCOPE, AZURE_TENANT_ID, DevStack

MakeHop = Callable[..., EntraHop]


@pytest.fixture(autouse=True)
def _trust_dev_ca(stack: DevStack, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(stack.ca_file))


def azure_section(stack: DevStack, **extra: object) -> dict[str, object]:
    return {"tenant_id": AZURE_TENANT_ID, "client_id": AZURE_CLIENT_ID,
            "scopes": [AZURE_STORAGE_SCOPE], "authority_host": stack.azure_authority, **extra}


@pytest.fixture
def make_hop(stack: DevStack) -> MakeHop:
    def make(**overrides: object) -> EntraHop:
        fields: dict[str, object] = {"tenant_id": AZURE_TENANT_ID, "client_id": AZURE_CLIENT_ID,
                                     "scope": AZURE_STORAGE_SCOPE,
                                     "authority_host": stack.azure_authority}
        fields.update(overrides)
        return EntraHop(AzureHopConfig(**fields),  # type: ignore[arg-type]
                        http=EntraHttp(timeout=5.0, skew=None))
    return make
