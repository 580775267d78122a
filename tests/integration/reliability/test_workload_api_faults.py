"""Fault scenarios at the Workload API, RELIABILITY.md (a) rows 1-6.

- Row 1, agent socket missing at start: start not-ready, retry with capped, jittered
  backoff, never exit or spin; deliver once the agent appears.
- Row 2, agent restarts mid-stream: keep serving the last good credentials, re-open the
  bundle watch, refresh again once it is back.
- Row 3, `PermissionDenied` (entry not synced yet): retry with backoff, not fatal.
- Row 4, `InvalidArgument`: permanent; not retried before the 5-minute cap, alarm metric.
- Rows 5-6, an agent handing out a cached JWT-SVID about to expire (its server is down):
  never send it; keep the existing credentials.

Virtual-time scenarios run the daemon and both clouds on one FakeClock; every scenario
runs under the never-expired checker (harness.ExpiryChecker).
"""

from __future__ import annotations

import logging
import time

import grpc
import pytest
from spiffe import TrustDomain

from bridge.clouds import AWS
from bridge.devstack import FETCH_JWT_BUNDLES, FETCH_JWT_SVID, GrpcFailure
from bridge.refresh.policy import BACKOFF_CAP, Policy
from bridge.serving.health import readiness
from tests.support.expiry import (
    FOREVER,
    MakeScenario,
    Scenario,
    assert_backoff,
    channels,
    mint_on,
)

pytestmark = pytest.mark.integration
DEMO = "spiffe://example.org/demo"
AWS_CHANNELS = channels("aws")
GCP_CHANNELS = channels("gcp")


def ready(s: Scenario) -> bool:
    return readiness(s.bridge.daemon.store.snapshot(), s.mono())[0]


def test_agent_missing_at_start_is_not_ready_retries_with_backoff_then_delivers(
        scenario: MakeScenario) -> None:
    s = scenario(metadata=True, virtual=True, agent=False, deliver=False)
    vt = s.vt
    vt.settle()
    assert s.metric("spiffe_bridge_workload_api_up") == 0
    assert s.state("aws") == "expired"
    assert not ready(s)
    status = s.status("aws")
    assert (status.delivered, status.last_error) == (False, "unavailable")
    nothing = s.sweep()
    assert nothing.served() == set()
    assert nothing.outcome("grpc:aws") == "UNAVAILABLE"
    assert (nothing.outcome("container:aws"), nothing.outcome("imds:aws")) == ("503", "503")
    assert nothing.outcome("file:aws/aws.json") == "absent"

    delays = [vt.advance_to_wake("refresh:aws") for _ in range(11)]
    assert_backoff(delays)  # 1, 2, 4 ... 256, then the 300 s cap
    attempts = s.metric("spiffe_bridge_refresh_total", target="aws", result="failure")
    assert attempts == len(delays) + 1
    # Never spins: while no retry is due nothing happens, however long (real) we wait.
    time.sleep(0.3)
    assert s.metric("spiffe_bridge_refresh_total", target="aws", result="failure") == attempts
    assert s.stack.aws.requests == ()

    s.stack.workload.start()
    waited = vt.advance_to_wake("refresh:aws")
    assert waited <= BACKOFF_CAP
    assert s.status("aws").delivered
    assert s.state("aws") == "fresh"
    assert s.metric("spiffe_bridge_workload_api_up") == 1
    assert ready(s)
    assert s.sweep().served() == AWS_CHANNELS


def test_agent_restart_mid_stream_serves_the_last_good_and_reopens_the_bundle_stream(
        scenario: MakeScenario) -> None:
    s = scenario(("aws", "gcp"), metadata=True)
    workload, source = s.stack.workload, s.bridge.daemon.source
    first = {t: s.status(t).credential for t in ("aws", "gcp")}
    streams = workload.faults.calls(FETCH_JWT_BUNDLES)
    assert streams >= 1

    workload.stop()
    down = s.bridge.refresh_all()
    assert [(st.state, st.last_error, st.last_error_permanent) for st in down] == [
        ("stale", "unavailable", False)] * 2
    assert s.metric("spiffe_bridge_workload_api_up") == 0
    meanwhile = s.sweep()
    assert meanwhile.served() == AWS_CHANNELS | GCP_CHANNELS  # the last good, everywhere
    assert [s.status(t).credential for t in ("aws", "gcp")] == list(first.values())

    # The restarted agent has a new signing key: only a re-opened bundle stream lets the
    # bridge verify the SVIDs it signs (py-spiffe re-opens it; the bridge keeps the client).
    workload.start()
    kid = s.stack.rotate_keys()

    def knows_kid() -> bool:
        bundles = source.jwt_bundles()
        bundle = bundles.get_bundle_for_trust_domain(TrustDomain("example.org")) if (
            bundles) else None
        return bundle is not None and bundle.get_jwt_authority(kid) is not None

    s.wait_for(knows_kid, "the bundle stream to be re-opened after the restart", timeout=10)
    assert workload.faults.calls(FETCH_JWT_BUNDLES) > streams
    up = s.bridge.refresh_all()
    assert [st.state for st in up] == ["fresh", "fresh"]
    assert all(s.status(t).credential != first[t] for t in first)
    assert s.metric("spiffe_bridge_workload_api_up") == 1
    assert s.sweep().served() == AWS_CHANNELS | GCP_CHANNELS


def test_permission_denied_is_retried_with_backoff_until_the_entry_is_synced(
        scenario: MakeScenario) -> None:
    """SPIRE answers PermissionDenied while the registration entry has not reached the
    agent (here: the agent issues no identity at all), then starts issuing."""
    s = scenario(virtual=True, deliver=False,
                 prepare=lambda stack: stack.workload.set_identities([]))
    vt = s.vt
    vt.settle()
    delays = [vt.advance_to_wake("refresh:aws") for _ in range(5)]
    assert_backoff(delays)
    assert s.failures("aws", "permission_denied") == len(delays) + 1
    assert s.metric("spiffe_bridge_permanent_failure", target="aws") == 0
    assert s.metric("spiffe_bridge_workload_api_up") == 1  # the agent did answer
    assert s.stack.workload.faults.calls(FETCH_JWT_SVID) == len(delays) + 1
    assert s.stack.aws.requests == ()  # nothing to exchange yet
    assert s.state("aws") == "expired"

    s.stack.workload.set_identities([DEMO])
    vt.advance_to_wake("refresh:aws")
    assert s.state("aws") == "fresh"
    assert s.status("aws").consecutive_failures == 0
    assert s.sweep().served() == channels("aws", metadata=False)
    # The backoff was reset by the success: the next wake-up is the scheduled refresh,
    # inside the credential's safe window (a quarter of its life to its reserve, spread).
    earliest, latest = Policy(min_remaining=AWS.min_remaining).safe_window(
        issued_at=0.0, expires_at=3600.0)
    wait = vt.settle()["refresh:aws"] - vt.clock.monotonic()
    assert earliest - 5 <= wait <= latest


def test_invalid_argument_is_permanent_and_not_retried_before_the_cap(
        scenario: MakeScenario, caplog: pytest.LogCaptureFixture) -> None:
    s = scenario(virtual=True, metadata=True)
    vt, workload = s.vt, s.stack.workload
    held = s.status("aws").credential
    workload.faults.fail_next(FETCH_JWT_SVID, GrpcFailure(
        grpc.StatusCode.INVALID_ARGUMENT, "audience must be specified"), times=FOREVER)
    calls = workload.faults.calls(FETCH_JWT_SVID)

    with caplog.at_level(logging.ERROR, logger="bridge.refresh.scheduler"):
        vt.advance_to_wake("refresh:aws")  # the half-life refresh
    status = s.status("aws")
    assert (status.last_error, status.last_error_permanent) == ("invalid_argument", True)
    assert status.state == "stale"
    assert status.credential == held  # still valid: still served
    assert s.metric("spiffe_bridge_permanent_failure", target="aws") == 1
    assert any("permanent" in r.getMessage() and r.levelno == logging.ERROR
               for r in caplog.records), "the permanent failure was not logged as an error"
    assert workload.faults.calls(FETCH_JWT_SVID) == calls + 1

    # Backoff at the cap straight away, not 1 s: nothing in the next 200 s.
    wait = vt.settle()["refresh:aws"] - vt.clock.monotonic()
    assert 0.75 * BACKOFF_CAP <= wait <= BACKOFF_CAP
    vt.advance(200)
    assert workload.faults.calls(FETCH_JWT_SVID) == calls + 1
    vt.advance_to_wake("refresh:aws")
    assert workload.faults.calls(FETCH_JWT_SVID) == calls + 2
    assert s.sweep().served() == AWS_CHANNELS

    # Fixed (the agent accepts the request again): the next capped retry succeeds.
    workload.faults.reset()
    mint_on(s.stack, vt.now)
    assert vt.advance_to_wake("refresh:aws") <= BACKOFF_CAP
    assert s.state("aws") == "fresh"
    assert s.metric("spiffe_bridge_permanent_failure", target="aws") == 0


def test_a_cached_svid_about_to_expire_is_never_sent_and_the_credential_is_kept(
        scenario: MakeScenario) -> None:
    """Rows 5-6: the agent's server is down, so the agent returns the JWT it cached,
    20 s from expiry (under the bridge's 30 s margin): it is refused before any STS
    call, the existing credential stays (stale), and a good SVID later succeeds."""
    s = scenario(virtual=True)
    vt, stack = s.vt, s.stack
    held = s.status("aws").credential
    sts_calls = len(stack.aws.requests)

    def cached(spiffe_id: str, audience: tuple[str, ...]) -> str:
        now = int(vt.now())
        return stack.authority.mint(spiffe_id, list(audience), 270, iat=now - 250)

    stack.workload.faults.replace_svids(cached)
    vt.advance_to_wake("refresh:aws")
    vt.advance_to_wake("refresh:aws")
    assert s.failures("aws", "svid_expiring") == 2
    assert len(stack.aws.requests) == sts_calls  # never sent
    assert s.status("aws").credential == held
    assert s.state("aws") == "stale"

    mint_on(stack, vt.now)
    vt.advance_to_wake("refresh:aws")
    assert s.state("aws") == "fresh"
    assert len(stack.aws.requests) == sts_calls + 1
