"""Fixtures the emulators' unit tests share: the SVID signer and the IdP serving its keys."""

from __future__ import annotations

import pytest

from bridge.devstack import JwtAuthority
from tests.unit.devstack.fakes import ISSUER, NOW, FakeIdp


@pytest.fixture
def authority() -> JwtAuthority:
    return JwtAuthority("example.org", issuer=ISSUER, clock=lambda: NOW)


@pytest.fixture
def idp(authority: JwtAuthority) -> FakeIdp:
    return FakeIdp(authority)
