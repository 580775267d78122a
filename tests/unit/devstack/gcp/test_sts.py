"""The token exchange: Google's response, request rules, providers, conditions."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import pytest

from bridge.devstack import JwtAuthority
from bridge.devstack.gcp import (
    ACCESS_TOKEN_TYPE,
    AWS_TOKEN_TYPE,
    CONDITION_REJECTED,
    IAM_SCOPE,
    JWT_TOKEN_TYPE,
    SUBJECT_TOO_LONG,
    GcpEmulator,
    federated_principal,
)
from tests.unit.devstack.fakes import ISSUER, SUB
from tests.unit.devstack.gcp.support import (
    AWS_PROVIDER,
    POOL,
    PROVIDER,
    exchange,
    mint_svid,
    signed_aws_token,
)


def test_exchange_success_shape(gcp: GcpEmulator, authority: JwtAuthority) -> None:
    """A valid SVID yields Google's STS response and a token whoami maps to the principal."""
    status, document = exchange(gcp, mint_svid(authority))
    assert status == 200
    assert set(document) == {"access_token", "issued_token_type", "token_type", "expires_in"}
    assert document["access_token"].startswith("ya29.dev-")
    assert document["issued_token_type"] == ACCESS_TOKEN_TYPE
    assert (document["token_type"], document["expires_in"]) == ("Bearer", 3600)
    grant = gcp.whoami(document["access_token"])
    assert grant is not None
    assert grant.principal == f"principal://iam.googleapis.com/{POOL}/subject/{SUB}"
    assert grant.principal == federated_principal(PROVIDER, SUB)
    assert (grant.provider, grant.subject, grant.scopes) == (PROVIDER, SUB, (IAM_SCOPE,))
    assert document["access_token"] not in repr(grant)


@pytest.mark.parametrize(
    ("overrides", "error"),
    [
        ({"grant_type": "client_credentials"}, "unsupported_grant_type"),
        ({"requested_token_type": JWT_TOKEN_TYPE}, "invalid_request"),
        ({"subject_token_type": "urn:ietf:params:oauth:token-type:saml2"}, "invalid_request"),
        ({"subject_token": ""}, "invalid_request"),
        ({"audience": "projects/123456/providers/spire"}, "invalid_request"),
        ({"audience": PROVIDER.replace("/spire/providers", "/sp/providers")}, "invalid_request"),
        ({"options": "{not json"}, "invalid_request"),
        ({"options": json.dumps({"userProject": "p" * 33})}, "invalid_request"),
    ],
    ids=[
        "grant-type",
        "requested-type",
        "subject-type",
        "no-token",
        "audience-shape",
        "pool-id-short",
        "options-json",
        "user-project",
    ],
)
def test_request_rules(
    gcp: GcpEmulator, authority: JwtAuthority, overrides: dict[str, str], error: str
) -> None:
    """Malformed exchange requests are RFC 6749 errors with HTTP 400."""
    status, document = exchange(gcp, mint_svid(authority), **overrides)
    assert (status, document["error"]) == (400, error)
    assert document["error_description"]


def test_unknown_and_disabled_provider(gcp: GcpEmulator, authority: JwtAuthority) -> None:
    """A provider that does not exist, or is disabled, is invalid_target."""
    other = PROVIDER.replace("providers/spire", "providers/other")
    assert exchange(gcp, mint_svid(authority), audience=other)[1]["error"] == "invalid_target"
    gcp.set_provider_enabled(PROVIDER, False)
    status, document = exchange(gcp, mint_svid(authority))
    assert (status, document["error"]) == (400, "invalid_target")
    gcp.set_provider_enabled(PROVIDER, True)
    assert exchange(gcp, mint_svid(authority))[0] == 200


def test_subject_byte_limit(gcp: GcpEmulator, authority: JwtAuthority) -> None:
    """google.subject (sub) may be 127 bytes; 128 is invalid_grant with Google's text."""
    prefix = "spiffe://example.org/"
    fits = prefix + "a" * (127 - len(prefix))
    assert exchange(gcp, mint_svid(authority, sub=fits))[0] == 200
    status, document = exchange(gcp, mint_svid(authority, sub=fits + "a"))
    assert (status, document) == (
        400,
        {"error": "invalid_grant", "error_description": SUBJECT_TOO_LONG},
    )


def test_attribute_condition_glob(gcp: GcpEmulator, authority: JwtAuthority) -> None:
    """A sub outside the condition's glob is unauthorized_client with Google's text."""
    status, document = exchange(gcp, mint_svid(authority, sub="spiffe://evil.org/app"))
    assert (status, document) == (
        400,
        {"error": "unauthorized_client", "error_description": CONDITION_REJECTED},
    )


def test_attribute_condition_callable(gcp: GcpEmulator, authority: JwtAuthority) -> None:
    """A callable condition sees the verified claims."""
    seen: list[Mapping[str, Any]] = []

    def condition(claims: Mapping[str, Any]) -> bool:
        seen.append(claims)
        return claims.get("team") == "blue"

    gcp.add_oidc_provider(
        PROVIDER, issuer_uri=ISSUER, allowed_audiences=[PROVIDER], attribute_condition=condition
    )
    assert exchange(gcp, mint_svid(authority, team="red"))[1]["error"] == "unauthorized_client"
    assert exchange(gcp, mint_svid(authority, team="blue"))[0] == 200
    assert seen[-1]["sub"] == SUB


def test_token_type_must_fit_provider(aws_gcp: GcpEmulator, authority: JwtAuthority) -> None:
    """A JWT for an AWS provider, or an AWS token for an OIDC provider, is invalid_request."""
    status, document = exchange(aws_gcp, mint_svid(authority), audience=AWS_PROVIDER)
    assert (status, document["error"]) == (400, "invalid_request")
    status, document = exchange(aws_gcp, signed_aws_token(), subject_token_type=AWS_TOKEN_TYPE)
    assert (status, document["error"]) == (400, "invalid_request")
