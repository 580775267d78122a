"""Configuring the project: providers and accounts refuse bad input."""

from __future__ import annotations

import pytest

from bridge.devstack.gcp import GcpEmulator
from tests.unit.devstack.fakes import ISSUER
from tests.unit.devstack.gcp.support import AWS_PROVIDER, SA


def test_configuration_validation(gcp: GcpEmulator) -> None:
    """Providers and accounts refuse malformed names, IDs, members and lifetimes."""
    with pytest.raises(ValueError, match="resource name"):
        gcp.add_oidc_provider("projects/1/providers/x", issuer_uri=ISSUER)
    with pytest.raises(ValueError, match="12 digits"):
        gcp.add_aws_provider(AWS_PROVIDER, account_id="123", sts_url="http://127.0.0.1:1")
    with pytest.raises(ValueError, match="max_lifetime"):
        gcp.add_service_account(SA, max_lifetime=43201)
    with pytest.raises(ValueError, match="member"):
        gcp.add_service_account(SA, token_creators=["user:bob"])
    with pytest.raises(ValueError, match="email"):
        gcp.add_service_account("not-an-email")
