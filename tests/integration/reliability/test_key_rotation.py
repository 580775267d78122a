"""Fault scenario: JWT signing-key rotation and forced revocation, RELIABILITY.md (a)
row 11 (with row 6's rule: a token refused as invalid is retried once, at once, with a
newly fetched JWT-SVID, never resent).

The dev authority rotates its ES256 key three times, revoking the previous key each
time (SPIRE's prepare/activate/taint/revoke, compressed). The agent streams each new
bundle; AWS STS and Google STS meet an unknown `kid`, refetch the issuer's JWKS past
their 60-second caches, and keep accepting the bridge's tokens. The bridge caches no
JWT: every exchange carries a token signed by the key active at that moment.
"""

from __future__ import annotations

import jwt
import pytest
from spiffe import TrustDomain

from bridge.devstack import FETCH_JWT_SVID, KEYS_PATH, HttpFailure
from bridge.devstack.aws import ASSUME_ROLE_WITH_WEB_IDENTITY
from bridge.devstack.gcp import OP_TOKEN
from tests.support.expiry import FOREVER, MakeScenario, Scenario, channels

pytestmark = pytest.mark.integration
ROTATIONS = 3


def _kid(token: str) -> str:
    return str(jwt.get_unverified_header(token)["kid"])


def _sent_kids(s: Scenario) -> tuple[str, str]:
    """The kid of the last token each cloud received from the bridge."""
    aws = [r for r in s.stack.aws.requests if r.action == ASSUME_ROLE_WITH_WEB_IDENTITY][-1]
    gcp = [r for r in s.stack.gcp.requests if r.operation == OP_TOKEN][-1]
    return _kid(aws.params["WebIdentityToken"]), _kid(gcp.form["subject_token"])


def test_key_rotation_and_revocation_keep_every_exchange_working(
        scenario: MakeScenario) -> None:
    s = scenario(("aws", "gcp"))
    authority, source = s.stack.authority, s.bridge.daemon.source
    assert _sent_kids(s) == (authority.active_kid,) * 2
    fetched = s.stack.oidc.faults.calls(KEYS_PATH)

    for _ in range(ROTATIONS):
        old = authority.active_kid
        kid = s.stack.rotate_keys()

        def streamed(kid: str = kid) -> bool:
            bundles = source.jwt_bundles()
            bundle = bundles.get_bundle_for_trust_domain(TrustDomain("example.org")) if (
                bundles) else None
            return bundle is not None and bundle.get_jwt_authority(kid) is not None

        s.wait_for(streamed, "the new key to reach the bridge on the bundle stream")
        statuses = s.bridge.refresh_all()
        assert [(st.state, st.last_error) for st in statuses] == [("fresh", None)] * 2
        assert _sent_kids(s) == (kid, kid)
        authority.revoke(old)  # taint + revoke: tokens it signed no longer verify
        assert old not in authority.kids
        assert s.sweep().served() == channels("aws", "gcp", metadata=False)

    # Each cloud met each new kid once, past its cache, and refetched the JWKS for it.
    assert s.stack.oidc.faults.calls(KEYS_PATH) - fetched >= 2 * ROTATIONS
    assert s.metric("spiffe_bridge_refresh_total", target="aws", result="failure") == 0


def test_a_token_refused_as_invalid_is_retried_once_at_once_with_a_new_svid(
        scenario: MakeScenario) -> None:
    s = scenario()
    sts, workload = s.stack.aws, s.stack.workload

    def sent() -> list[str]:
        return [r.params["WebIdentityToken"] for r in sts.requests
                if r.action == ASSUME_ROLE_WITH_WEB_IDENTITY]

    fetches, tokens = workload.faults.calls(FETCH_JWT_SVID), len(sent())
    sts.faults.fail_next(ASSUME_ROLE_WITH_WEB_IDENTITY, HttpFailure(400, "InvalidIdentityToken"))
    [status] = s.bridge.refresh_all()
    assert (status.state, status.last_error) == ("fresh", None)
    assert workload.faults.calls(FETCH_JWT_SVID) == fetches + 2
    first, second = sent()[tokens:]
    assert first != second  # a new SVID, not the refused one again
    assert s.metric("spiffe_bridge_refresh_total", target="aws", result="failure") == 0

    # Refused every time: one immediate retry per refresh, then the scheduler's backoff.
    sts.faults.fail_next(ASSUME_ROLE_WITH_WEB_IDENTITY, HttpFailure(400, "InvalidIdentityToken"),
                         times=FOREVER)
    before = len(sent())
    [status] = s.bridge.refresh_all()
    assert (status.state, status.last_error, status.last_error_permanent) == (
        "stale", "invalid_token", False)
    assert len(sent()) == before + 2
    assert len(set(sent()[before:])) == 2
