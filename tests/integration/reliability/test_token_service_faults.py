"""Fault scenarios at the cloud token services, RELIABILITY.md (a) rows 7 and 8.

- Row 7, STS 5xx, throttling, `IDPCommunicationError` (and the GCP STS / IAM
  equivalents): bounded, jittered exponential retry; the old credential is served
  meanwhile (target *stale*), fresh again after recovery; failures counted by reason.
- Row 8, permanent failure (`AccessDenied` from a trust policy that no longer admits the
  workload): back off to the maximum (no hammering: STS sees at most the capped rate),
  raise the alarm metric, serve the last good credential until its real expiry, then go
  not-ready and serve nothing.

All on virtual time (one FakeClock for the daemon and both clouds), under the
never-expired checker.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from bridge.devstack import (
    AWS_AUDIENCE,
    DEMO_ROLE_ARN,
    DEMO_ROLE_MAX_SESSION,
    DevStack,
    HttpFailure,
)
from bridge.devstack.aws import ASSUME_ROLE_WITH_WEB_IDENTITY
from bridge.devstack.gcp import OP_GENERATE_ACCESS_TOKEN, OP_TOKEN
from bridge.refresh.policy import BACKOFF_CAP
from bridge.serving.health import readiness
from tests.support.expiry import FOREVER, MakeScenario, assert_backoff, channels

pytestmark = pytest.mark.integration


@dataclass(frozen=True)
class Outage:
    target: str
    reason: str
    start: Callable[[DevStack], None]
    end: Callable[[DevStack], None]


def _fail(emulator: str, operation: str, failure: HttpFailure) -> Callable[[DevStack], None]:
    def start(stack: DevStack) -> None:
        getattr(stack, emulator).faults.fail_next(operation, failure, times=FOREVER)
    return start


def _idp_down(stack: DevStack) -> None:
    """The issuer's discovery endpoint is unreachable and STS has no cached keys: AWS
    answers IDPCommunicationError (a real one, not a fault switch)."""
    stack.oidc.stop()
    stack.aws.clear_jwks_cache()


OUTAGES = {
    "aws-sts-503": Outage("aws", "unavailable", _fail(
        "aws", ASSUME_ROLE_WITH_WEB_IDENTITY, HttpFailure(503, "ServiceUnavailable")),
        lambda stack: stack.aws.faults.reset()),
    "aws-sts-throttling": Outage("aws", "throttled", _fail(
        "aws", ASSUME_ROLE_WITH_WEB_IDENTITY, HttpFailure(400, "Throttling")),
        lambda stack: stack.aws.faults.reset()),
    "aws-idp-communication-error": Outage("aws", "idp_unreachable", _idp_down,
                                          lambda stack: stack.oidc.start()),
    "gcp-sts-503": Outage("gcp", "unavailable", _fail(
        "gcp", OP_TOKEN, HttpFailure(503, "temporarily_unavailable")),
        lambda stack: stack.gcp.faults.reset()),
    "gcp-iam-503": Outage("gcp", "unavailable", _fail(
        "gcp", OP_GENERATE_ACCESS_TOKEN, HttpFailure(503, "UNAVAILABLE")),
        lambda stack: stack.gcp.faults.reset()),
}


@pytest.mark.parametrize("outage", OUTAGES.values(), ids=OUTAGES.keys())
def test_transient_token_service_failure_serves_stale_then_recovers(
        outage: Outage, scenario: MakeScenario) -> None:
    s = scenario((outage.target,), virtual=True, metadata=True)
    vt, name = s.vt, outage.target
    served = channels(name)
    held = s.status(name).credential
    outage.start(s.stack)

    vt.advance_to_wake(f"refresh:{name}")  # the half-life refresh fails
    status = s.status(name)
    assert (status.state, status.last_error, status.last_error_permanent) == (
        "stale", outage.reason, False)
    assert s.state(name) == "stale"
    assert status.credential == held
    assert s.sweep().served() == served  # the old credential, everywhere
    delays = [vt.advance_to_wake(f"refresh:{name}") for _ in range(4)]
    assert_backoff(delays)
    assert s.failures(name, outage.reason) == len(delays) + 1
    assert s.metric("spiffe_bridge_permanent_failure", target=name) == 0

    outage.end(s.stack)
    vt.advance_to_wake(f"refresh:{name}")
    status = s.status(name)
    assert (status.state, status.last_error, status.consecutive_failures) == ("fresh", None, 0)
    assert s.state(name) == "fresh"
    assert status.credential != held
    assert s.failures(name, outage.reason) == len(delays) + 1
    assert s.sweep().served() == served


def test_permanent_access_denied_backs_off_to_the_cap_then_lapses_to_not_ready(
        scenario: MakeScenario) -> None:
    s = scenario(virtual=True, metadata=True)
    vt, sts = s.vt, s.stack.aws
    held = s.status("aws").credential
    assert held is not None
    # The role's trust policy no longer admits this SPIFFE ID: STS says AccessDenied.
    sts.add_role(DEMO_ROLE_ARN, provider_url=s.stack.issuer, aud=AWS_AUDIENCE,
                 sub="spiffe://example.org/someone-else",
                 max_session_duration=DEMO_ROLE_MAX_SESSION)
    sts.clear_requests()
    began = vt.now()

    vt.advance(held.expires_at - 60 - vt.now())  # a minute before the real expiry
    status = s.status("aws")
    assert (status.state, status.last_error, status.last_error_permanent) == (
        "stale", "access_denied", True)
    assert s.metric("spiffe_bridge_permanent_failure", target="aws") == 1
    assert s.sweep().served() == channels("aws")  # still valid, still served

    vt.advance(120)  # a minute past it
    assert s.state("aws") == "expired"
    assert not readiness(s.bridge.daemon.store.snapshot(), vt.monotonic())[0]
    gone = s.sweep()
    assert gone.served() == set()
    assert (gone.outcome("grpc:aws"), gone.outcome("container:aws"),
            gone.outcome("imds:aws")) == ("UNAVAILABLE", "503", "503")
    assert gone.outcome("file:aws/aws.json") == "absent"
    assert gone.outcome("file:aws/credentials") in {"absent", "empty"}

    vt.advance(began + 3 * 3600 - vt.now())  # three hours after the denial began
    assert s.metric("spiffe_bridge_permanent_failure", target="aws") == 1
    attempts = [r.received_at for r in sts.requests if r.action == ASSUME_ROLE_WITH_WEB_IDENTITY]
    gaps = [b - a for a, b in itertools.pairwise(attempts)]
    window = attempts[-1] - attempts[0]
    # At the capped rate: every gap 75-100 % of 5 min, but for at most one shorter wait
    # that lands on the moment the held credential had to be replaced.
    short = [g for g in gaps if g < 0.75 * BACKOFF_CAP - 1]
    assert len(short) <= 1, gaps
    assert all(g <= BACKOFF_CAP + 1 for g in gaps), gaps
    assert 2 <= len(attempts) <= window / (0.75 * BACKOFF_CAP) + 2, (len(attempts), window)
    assert s.failures("aws", "access_denied") == len(attempts)
    print(f"{len(attempts)} STS attempts in {window:.0f}s of permanent denial; "
          f"gaps {min(gaps):.0f}-{max(gaps):.0f}s")
