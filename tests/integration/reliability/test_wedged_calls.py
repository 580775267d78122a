"""Fault scenario: a wedged refresher, RELIABILITY.md (a) row 17.

The agent or STS accepts the call and never answers in time. Every call carries the
configured deadline (`workload_api.timeout`, here 1 s), so a refresh fails in about
that long with a retryable reason, the last good credential stays served (stale), and
the next refresh after the service unwedges succeeds.
"""

from __future__ import annotations

import time

import pytest

from bridge.devstack import FETCH_JWT_SVID
from bridge.devstack.aws import ASSUME_ROLE_WITH_WEB_IDENTITY
from tests.support.expiry import MakeScenario, channels

pytestmark = pytest.mark.integration
DEADLINE = 1.0
WEDGED = 30.0  # far longer than the deadline; the emulators wake it on reset


@pytest.mark.parametrize("where", ["workload-api", "sts"])
def test_a_wedged_call_hits_its_deadline_and_the_next_refresh_succeeds(
        where: str, scenario: MakeScenario) -> None:
    s = scenario(metadata=True, timeout=f"{DEADLINE:.0f}s")
    held = s.status("aws").credential
    faults = s.stack.workload.faults if where == "workload-api" else s.stack.aws.faults
    faults.set_latency(WEDGED, operation=FETCH_JWT_SVID if where == "workload-api"
                       else ASSUME_ROLE_WITH_WEB_IDENTITY)

    started = time.monotonic()
    [status] = s.bridge.refresh_all()
    took = time.monotonic() - started
    assert DEADLINE * 0.9 <= took < DEADLINE + 2.0, took
    assert (status.state, status.last_error_permanent) == ("stale", False)
    assert status.last_error in {"timeout", "unreachable", "unavailable"}
    assert status.credential == held
    assert s.sweep().served() == channels("aws")

    faults.reset()  # unwedged (and the sleeping call woken)
    [status] = s.bridge.refresh_all()
    assert (status.state, status.last_error) == ("fresh", None)
    assert status.credential != held
