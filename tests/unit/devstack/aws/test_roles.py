"""Configuring the account: add_role and register_oidc_provider refuse bad input."""

from __future__ import annotations

import pytest

from bridge.devstack.aws import AwsStsEmulator
from tests.unit.devstack.aws.support import ROLE
from tests.unit.devstack.fakes import ISSUER


def test_add_role_validates_inputs(sts: AwsStsEmulator) -> None:
    """add_role refuses malformed ARNs and out-of-range maximum durations."""
    with pytest.raises(ValueError, match="ARN"):
        sts.add_role("role/demo", provider_url=ISSUER, aud=None, sub=None)
    with pytest.raises(ValueError, match="within 3600"):
        sts.add_role(ROLE, provider_url=ISSUER, aud=None, sub=None, max_session_duration=60)


def test_register_provider_needs_client_ids(sts: AwsStsEmulator) -> None:
    """An OIDC provider needs at least one client ID."""
    with pytest.raises(ValueError, match="client_ids"):
        sts.register_oidc_provider(ISSUER, [])
