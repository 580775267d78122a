"""IAM Credentials: bearer, scopes, bindings, delegation, lifetimes, ID-token rules."""

from __future__ import annotations

import re
from typing import Any

import jwt
import pytest

from bridge.devstack import JwtAuthority
from bridge.devstack.gcp import GcpEmulator, federated_principal, pool_principal_set
from tests.unit.devstack.fakes import NOW, SUB
from tests.unit.devstack.gcp.support import (
    PERMISSION_DENIED,
    PROVIDER,
    SA,
    call_iam,
    exchange,
    federated_token,
    iam_error,
    mint_svid,
)


def test_generate_access_token_shape(gcp: GcpEmulator, authority: JwtAuthority) -> None:
    """The reply is accessToken + expireTime without fractional seconds; whoami names the SA."""
    body = {"scope": ["s1"], "lifetime": "1800s", "delegates": None}
    status, document = call_iam(gcp, federated_token(gcp, authority), body)
    assert status == 200
    assert set(document) == {"accessToken", "expireTime"}
    assert document["accessToken"].startswith("ya29.dev-")
    assert document["expireTime"] == "2027-01-15T08:30:00Z"  # NOW + 1800, truncated
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", document["expireTime"])
    grant = gcp.whoami(document["accessToken"])
    assert grant is not None
    assert (grant.principal, grant.service_account, grant.scopes) == (
        f"serviceAccount:{SA}",
        SA,
        ("s1",),
    )


def test_default_lifetime_and_unique_id_path(gcp: GcpEmulator, authority: JwtAuthority) -> None:
    """Without lifetime the token lives an hour; the account may be named by unique ID."""
    unique_id = gcp.service_accounts[SA].unique_id
    status, document = call_iam(gcp, federated_token(gcp, authority), account=unique_id)
    assert status == 200
    grant = gcp.whoami(document["accessToken"])
    assert grant is not None
    assert grant.expires_at == NOW + 0.5 + 3600


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"scope": ["s"], "lifetime": "3601s"}, "lifetime"),
        ({"scope": ["s"], "lifetime": "1h"}, "lifetime"),
        ({"scope": ["s"], "lifetime": "0s"}, "lifetime"),
        ({"scope": []}, "scope"),
        ({"lifetime": "60s"}, "scope"),
        ({"scope": ["s"], "delegates": ["other@proj.iam.gserviceaccount.com"]}, "delegate"),
    ],
    ids=["over-max", "bad-format", "zero", "no-scopes", "scope-missing", "delegate-form"],
)
def test_invalid_argument(
    gcp: GcpEmulator, authority: JwtAuthority, body: dict[str, Any], fragment: str
) -> None:
    """Bad bodies are 400 INVALID_ARGUMENT in Google's JSON error shape."""
    status, document = call_iam(gcp, federated_token(gcp, authority), body)
    code, state, message = iam_error(document)
    assert (status, code, state) == (400, 400, "INVALID_ARGUMENT")
    assert fragment in message


def test_extended_lifetime_when_allowed(gcp: GcpEmulator, authority: JwtAuthority) -> None:
    """With max_lifetime 43200 (org policy), a 12 h token is granted, not more."""
    gcp.add_service_account(
        SA, workload_identity_users=[pool_principal_set(PROVIDER)], max_lifetime=43200
    )
    bearer = federated_token(gcp, authority)
    assert call_iam(gcp, bearer, {"scope": ["s"], "lifetime": "43200s"})[0] == 200
    assert call_iam(gcp, bearer, {"scope": ["s"], "lifetime": "43201s"})[0] == 400


def test_permission_denied(gcp: GcpEmulator, authority: JwtAuthority) -> None:
    """Without workloadIdentityUser the call is 403 with Google's exact message."""
    gcp.add_service_account(SA)
    status, document = call_iam(gcp, federated_token(gcp, authority))
    assert (status, document) == (
        403,
        {"error": {"code": 403, "message": PERMISSION_DENIED, "status": "PERMISSION_DENIED"}},
    )


def test_binding_to_one_subject(gcp: GcpEmulator, authority: JwtAuthority) -> None:
    """A principal:// binding admits that subject only; a glob admits its pattern."""
    gcp.add_service_account(SA, workload_identity_users=[federated_principal(PROVIDER, SUB)])
    assert call_iam(gcp, federated_token(gcp, authority))[0] == 200
    other = exchange(gcp, mint_svid(authority, sub="spiffe://example.org/x"))[1]["access_token"]
    assert call_iam(gcp, other)[0] == 403
    glob = federated_principal(PROVIDER, "spiffe://example.org/*")
    gcp.add_service_account(SA, workload_identity_users=[glob])
    assert call_iam(gcp, other)[0] == 200


def test_unknown_account_is_not_found(gcp: GcpEmulator, authority: JwtAuthority) -> None:
    """An unknown service account is 404 NOT_FOUND."""
    status, document = call_iam(
        gcp, federated_token(gcp, authority), account="nope@proj.iam.gserviceaccount.com"
    )
    assert (status, iam_error(document)[1]) == (404, "NOT_FOUND")


@pytest.mark.parametrize(
    "bearer", [None, "", "ya29.dev-unknown"], ids=["no-header", "empty", "unknown-token"]
)
def test_unauthenticated(gcp: GcpEmulator, bearer: str | None) -> None:
    """A missing or unknown bearer token is 401 UNAUTHENTICATED."""
    status, document = call_iam(gcp, bearer)
    assert (status, iam_error(document)[1]) == (401, "UNAUTHENTICATED")


def test_expired_bearer(gcp: GcpEmulator, authority: JwtAuthority, clock: list[float]) -> None:
    """A federated token past its hour is 401, and whoami still knows it."""
    bearer = federated_token(gcp, authority)
    clock[0] += 3601
    assert call_iam(gcp, bearer)[0] == 401
    assert gcp.whoami(bearer) is not None


def test_insufficient_scopes(gcp: GcpEmulator, authority: JwtAuthority) -> None:
    """A bearer scoped to neither iam nor cloud-platform is 403."""
    status, document = call_iam(gcp, federated_token(gcp, authority, scope="openid email"))
    assert (status, iam_error(document)[2]) == (
        403,
        "Request had insufficient authentication scopes.",
    )


def test_project_must_be_wildcard(gcp: GcpEmulator, authority: JwtAuthority) -> None:
    """projects/<id>/serviceAccounts is refused: the '-' wildcard is mandatory."""
    status, document = call_iam(gcp, federated_token(gcp, authority), project="my-project")
    assert (status, iam_error(document)[1]) == (400, "INVALID_ARGUMENT")


def _chain(gcp: GcpEmulator, hops: int) -> list[str]:
    """Delegates d1..dn then the target: caller -> d1 -> ... -> dn -> target."""
    emails = [f"hop{i}@proj.iam.gserviceaccount.com" for i in range(1, hops + 1)] + [SA]
    holder = pool_principal_set(PROVIDER)
    for email in emails:
        if holder.startswith("principalSet://"):
            gcp.add_service_account(email, workload_identity_users=[holder])
        else:
            gcp.add_service_account(email, token_creators=[holder])
        holder = email
    return emails[:-1]


@pytest.mark.parametrize("hops", [0, 1, 3])
def test_delegation_chains(gcp: GcpEmulator, authority: JwtAuthority, hops: int) -> None:
    """Chains of 0, 1 and 3 delegates succeed when every hop holds token creator on the next."""
    delegates = _chain(gcp, hops)
    body = {"scope": ["s"], "delegates": [f"projects/-/serviceAccounts/{d}" for d in delegates]}
    status, document = call_iam(gcp, federated_token(gcp, authority), body)
    assert status == 200, document
    grant = gcp.whoami(document["accessToken"])
    assert grant is not None
    assert grant.delegates == tuple(delegates)


@pytest.mark.parametrize("broken", [0, 1, 2, 3])
def test_delegation_chain_broken_anywhere(
    gcp: GcpEmulator, authority: JwtAuthority, broken: int
) -> None:
    """Removing any one binding of a 3-delegate chain makes the call 403."""
    delegates = _chain(gcp, 3)
    accounts = [*delegates, SA]
    gcp.add_service_account(accounts[broken])  # same unique ID, no bindings
    body = {"scope": ["s"], "delegates": [f"projects/-/serviceAccounts/{d}" for d in delegates]}
    status, document = call_iam(gcp, federated_token(gcp, authority), body)
    assert (status, iam_error(document)[2]) == (403, PERMISSION_DENIED)


def test_service_account_token_as_bearer(gcp: GcpEmulator, authority: JwtAuthority) -> None:
    """A service account token can impersonate another account it is token creator on."""
    other = "other@proj.iam.gserviceaccount.com"
    gcp.add_service_account(other, token_creators=[SA])
    sa_token = call_iam(gcp, federated_token(gcp, authority))[1]["accessToken"]
    assert call_iam(gcp, sa_token, account=other)[0] == 200
    assert call_iam(gcp, sa_token, account=SA)[0] == 403  # not token creator on itself


def test_generate_id_token_rules(gcp: GcpEmulator, authority: JwtAuthority) -> None:
    """No email unless asked; an audience is required; getOpenIdToken is checked."""
    bearer = federated_token(gcp, authority)
    _, document = call_iam(gcp, bearer, {"audience": "a"}, method="generateIdToken")
    assert "email" not in jwt.decode(document["token"], options={"verify_signature": False})
    status, document = call_iam(gcp, bearer, {"includeEmail": True}, method="generateIdToken")
    assert (status, iam_error(document)[1]) == (400, "INVALID_ARGUMENT")
    gcp.add_service_account(SA)
    status, document = call_iam(gcp, bearer, {"audience": "a"}, method="generateIdToken")
    assert (status, iam_error(document)[2]) == (
        403,
        "Permission 'iam.serviceAccounts.getOpenIdToken' denied on resource (or it may not exist).",
    )
