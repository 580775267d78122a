"""bridge.jwt_svid: the one validator's rules, time judged by the clock passed in."""

from __future__ import annotations

import json
from typing import Any

import jwt
import pytest
from spiffe import JwtBundle, JwtBundleSet, TrustDomain

from bridge import jwt_svid
from bridge.devstack import JwtAuthority

SUB = "spiffe://example.org/ns/a/sa/b"
AUD = "spiffe-bridge"
NOW = 2_000_000_000  # a fixed clock, far from this host's: nothing reads the wall clock


@pytest.fixture
def authority() -> JwtAuthority:
    return JwtAuthority("example.org", clock=lambda: float(NOW))


def _bundles(authority: JwtAuthority) -> JwtBundleSet:
    td = TrustDomain("example.org")
    return JwtBundleSet({td: JwtBundle.parse(td, json.dumps(authority.spiffe_bundle()).encode())})


def _token(authority: JwtAuthority, **claims: Any) -> str:
    return authority.mint(SUB, [AUD], 300, extra_claims=claims or None)


def test_an_honest_svid_passes_by_the_given_clock(authority: JwtAuthority) -> None:
    """Issued at NOW (2033) for 5 minutes: valid at NOW whatever this host's clock says."""
    claims = jwt_svid.validate(_token(authority), audience=AUD, now=NOW,
                               bundles=_bundles(authority))
    assert claims["sub"] == SUB


@pytest.mark.parametrize(("claims", "now", "says"), [
    ({"iat": NOW + 3600, "exp": NOW + 3900}, NOW, "iat is 3600s in the future"),
    ({"nbf": NOW + 120}, NOW, "nbf is 120s in the future"),
    ({"exp": NOW + 25 * 3600}, NOW, "more than the 24h"),
    ({"exp": str(NOW + 300)}, NOW, "exp is not an integer"),
    ({"exp": NOW + 300.5}, NOW, "exp is not an integer"),
    ({"exp": True}, NOW, "exp is not an integer"),
    ({"aud": [AUD, "other"]}, NOW, "aud must be exactly"),
    ({}, NOW + 301, "has expired"),
], ids=["iat-ahead", "nbf-ahead", "exp-25h-ahead", "exp-string", "exp-float", "exp-bool",
        "aud-two", "expired-by-the-given-clock"])
def test_claims_no_spire_server_writes_are_refused(
        authority: JwtAuthority, claims: dict[str, Any], now: int, says: str) -> None:
    with pytest.raises(jwt_svid.InvalidSvidError, match=says):
        jwt_svid.validate(_token(authority, **claims), audience=AUD, now=now,
                          bundles=_bundles(authority))


def test_a_day_ahead_is_still_accepted(authority: JwtAuthority) -> None:
    """The bound is 24 h (plus the leeway): an SVID of a long-TTL SPIRE setup passes."""
    jwt_svid.validate(_token(authority, exp=NOW + 24 * 3600), audience=AUD, now=NOW,
                      bundles=_bundles(authority))


def test_an_hmac_algorithm_is_refused_before_any_key_is_tried(authority: JwtAuthority) -> None:
    kid = authority.spiffe_bundle()["keys"][0]["kid"]
    token = jwt.encode({"sub": SUB, "aud": [AUD], "exp": NOW + 300}, "a-shared-secret-key",
                       algorithm="HS256", headers={"kid": kid})
    with pytest.raises(jwt_svid.InvalidSvidError):
        jwt_svid.validate(token, audience=AUD, now=NOW, bundles=_bundles(authority))


def test_another_key_under_the_same_trust_domain_fails_the_signature(
        authority: JwtAuthority) -> None:
    with pytest.raises(jwt_svid.InvalidSvidError, match=r"Authority not found|Signature"):
        jwt_svid.validate(_token(authority.impostor()), audience=AUD, now=NOW,
                          bundles=_bundles(authority))
