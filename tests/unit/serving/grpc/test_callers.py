"""CallerVerifier: the JWT-SVID checks behind `allowed_callers`, with its cache."""

from __future__ import annotations

import json
import time

import pytest
from spiffe import JwtBundle, JwtBundleSet, TrustDomain

from bridge.devstack import JwtAuthority
from bridge.serving.grpc.callers import CallerRejected, CallerVerifier, bearer

CALLER = "spiffe://example.org/ns/a/sa/b"


def bundles_of(*authorities: JwtAuthority) -> JwtBundleSet:
    return JwtBundleSet({
        TrustDomain(a.trust_domain): JwtBundle.parse(
            TrustDomain(a.trust_domain), json.dumps(a.spiffe_bundle()).encode())
        for a in authorities})


@pytest.fixture
def authority() -> JwtAuthority:
    return JwtAuthority("example.org")


def test_valid_svid_names_the_caller(authority: JwtAuthority) -> None:
    bundles = bundles_of(authority)
    verifier = CallerVerifier(lambda: bundles, audience="spiffe-bridge", now=time.time)
    assert verifier.verify(authority.mint(CALLER, ["spiffe-bridge"], 300)) == CALLER


def test_no_bundle_yet_is_unavailable_not_a_denial(authority: JwtAuthority) -> None:
    verifier = CallerVerifier(lambda: None, audience="spiffe-bridge", now=time.time)
    with pytest.raises(CallerRejected) as caught:
        verifier.verify(authority.mint(CALLER, ["spiffe-bridge"], 300))
    assert caught.value.unavailable


@pytest.mark.parametrize("token", ["", "a" * 20_000, "x.y.z", "....", "eyJ9.eyJ9.e30"])
def test_malformed_tokens_are_rejected_with_a_reason(authority: JwtAuthority,
                                                     token: str) -> None:
    bundles = bundles_of(authority)
    verifier = CallerVerifier(lambda: bundles, audience="spiffe-bridge", now=time.time)
    with pytest.raises(CallerRejected) as caught:
        verifier.verify(token)
    assert not caught.value.unavailable
    assert str(caught.value)
    if len(token) > 10:
        assert token not in str(caught.value)


def test_cache_is_dropped_when_the_bundle_changes(authority: JwtAuthority) -> None:
    """A token verified once is served from cache only while the bundle set is the same
    object; a new bundle (rotation, revocation) forces a fresh check."""
    current = [bundles_of(authority)]
    verifier = CallerVerifier(lambda: current[0], audience="spiffe-bridge", now=time.time)
    token = authority.mint(CALLER, ["spiffe-bridge"], 300)
    old_kid = authority.active_kid
    assert verifier.verify(token) == CALLER
    authority.rotate()
    authority.revoke(old_kid)
    assert verifier.verify(token) == CALLER  # same bundle object: cached verdict
    current[0] = bundles_of(authority)
    with pytest.raises(CallerRejected):
        verifier.verify(token)


def test_cached_verdict_ends_at_the_tokens_expiry(authority: JwtAuthority) -> None:
    bundles = bundles_of(authority)
    clock = [time.time()]
    verifier = CallerVerifier(lambda: bundles, audience="spiffe-bridge", now=lambda: clock[0])
    token = authority.mint(CALLER, ["spiffe-bridge"], 2)
    assert verifier.verify(token) == CALLER
    time.sleep(2.1)  # the token's own exp passes (py-spiffe checks with the real clock)
    clock[0] += 3
    with pytest.raises(CallerRejected, match=r"expired|exp"):
        verifier.verify(token)


@pytest.mark.parametrize(("metadata", "token"), [
    ((("authorization", "Bearer abc"),), "abc"),
    ((("authorization", "bearer  abc "),), "abc"),
    ((("authorization", "Basic abc"),), ""),
    ((("x-other", "Bearer abc"),), ""),
    ((), ""),
    (None, ""),
])
def test_bearer_reads_only_the_authorization_bearer(metadata: object, token: str) -> None:
    assert bearer(metadata) == token
