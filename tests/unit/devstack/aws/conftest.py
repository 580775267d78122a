"""The AWS STS emulator as the unit tests configure it."""

from __future__ import annotations

import pytest

from bridge.devstack.aws import AwsStsEmulator
from tests.unit.devstack.aws.support import ROLE
from tests.unit.devstack.fakes import ISSUER, NOW, FakeIdp


@pytest.fixture
def sts(idp: FakeIdp) -> AwsStsEmulator:
    emulator = AwsStsEmulator(clock=lambda: NOW + 0.5, fetch=idp)
    emulator.register_oidc_provider(ISSUER, ["sts.amazonaws.com"])
    emulator.add_role(
        ROLE, provider_url=ISSUER, aud="sts.amazonaws.com", sub="spiffe://example.org/ns/*"
    )
    return emulator
