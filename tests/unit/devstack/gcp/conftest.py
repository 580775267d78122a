"""The Google emulator as the unit tests configure it."""

from __future__ import annotations

import pytest

from bridge.devstack.gcp import GcpEmulator, pool_principal_set
from tests.unit.devstack.fakes import ISSUER, NOW, FakeIdp
from tests.unit.devstack.gcp.support import AWS_PROVIDER, PORT, PROVIDER, SA, FakeAws


@pytest.fixture
def fake_aws() -> FakeAws:
    return FakeAws()


@pytest.fixture
def clock() -> list[float]:
    return [NOW + 0.5]


@pytest.fixture
def gcp(idp: FakeIdp, fake_aws: FakeAws, clock: list[float]) -> GcpEmulator:
    emulator = GcpEmulator(port=PORT, clock=lambda: clock[0], fetch=idp, replay=fake_aws)
    emulator.add_oidc_provider(
        PROVIDER,
        issuer_uri=ISSUER,
        allowed_audiences=[PROVIDER],
        attribute_condition="spiffe://example.org/*",
    )
    emulator.add_service_account(SA, workload_identity_users=[pool_principal_set(PROVIDER)])
    return emulator


@pytest.fixture
def aws_gcp(gcp: GcpEmulator) -> GcpEmulator:
    gcp.add_aws_provider(
        AWS_PROVIDER,
        account_id="111122223333",
        sts_url="http://127.0.0.1:4566/",
        attribute_condition="arn:aws:sts::111122223333:assumed-role/app/*",
    )
    return gcp
