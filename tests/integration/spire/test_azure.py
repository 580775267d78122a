"""Real SPIRE into Entra: a JWT-SVID minted by spire-server (audience
api://AzureADTokenExchange), handed out by spire-agent, accepted by the Entra emulator,
which reads the OIDC Discovery Provider's documents as Entra would."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge.devstack.azure import OP_TOKEN, EntraEmulator, FederatedCredential
from tests.integration.spire.conftest import RunOnce, WriteBridgeConfig
from tests.support.spire import WORKLOAD_A, SpireDeployment, jwt_claims, jwt_header

pytestmark = pytest.mark.integration
TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
CLIENT = "5e3ce6c0-2b1f-4285-8d4b-75ee78787346"


@pytest.fixture
def entra(spire: SpireDeployment, short_dir: Path,
          monkeypatch: pytest.MonkeyPatch) -> Iterator[EntraEmulator]:
    emulator = EntraEmulator(jwks_cache_seconds=0)
    emulator.start()
    emulator.directory.add_app(TENANT, CLIENT)
    emulator.directory.add_resource(TENANT, "https://storage.azure.com")
    emulator.directory.add_federated_credential(TENANT, CLIENT, FederatedCredential(
        "spire", issuer=spire.issuer, subject=WORKLOAD_A))
    monkeypatch.setenv("REQUESTS_CA_BUNDLE",
                       str(emulator.certificates.write_ca(short_dir)))
    yield emulator
    emulator.stop()


def test_an_entra_token_from_a_real_jwt_svid(
        spire: SpireDeployment, entra: EntraEmulator, bridge_config: WriteBridgeConfig,
        run_once: RunOnce, outdir: Path) -> None:
    config = bridge_config([{"name": "blob", "spiffe_id": WORKLOAD_A, "azure": {
        "tenant_id": TENANT, "client_id": CLIENT,
        "scopes": ["https://storage.azure.com/.default"],
        "authority_host": entra.authority_host}}])
    result = run_once(config)
    status = result.statuses["blob"]
    assert status.consecutive_failures == 0, status.last_error_detail
    doc = json.loads((outdir / "azure" / "blob.json").read_text())
    issued = entra.whoami(doc["access_token"])
    assert issued is not None
    assert issued.subject == WORKLOAD_A
    assertion = next(r.form["client_assertion"] for r in entra.requests
                     if r.operation == OP_TOKEN)
    assert jwt_header(assertion)["kid"] in spire.published_kids()
    claims = jwt_claims(assertion)
    assert (claims["iss"], claims["sub"], claims["aud"]) == (
        spire.issuer, WORKLOAD_A, ["api://AzureADTokenExchange"])
