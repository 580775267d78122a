"""Spread refresh: the whole safe window, deterministic per (node, target), window kept."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.refresh.policy import LEAD, RESERVE, TRANSIENT_CAP, Policy
from bridge.refresh.spread import GOLDEN, Spread, default_node_id, seed

AWS = Policy(min_remaining=15 * 60.0)
GCP = Policy(min_remaining=3 * 60.0 + 45)
T0 = 1_700_000_000.0
MIN = 60.0
HOUR = 3600.0


@pytest.mark.parametrize(("policy", "lifetime"),
                         [(AWS, HOUR), (AWS, 25 * MIN), (AWS, 12 * HOUR), (GCP, HOUR)],
                         ids=["aws-1h", "aws-25m", "aws-12h", "gcp-1h"])
def test_draws_cover_the_safe_window_from_a_quarter_to_the_hand_out_limit(
        policy: Policy, lifetime: float) -> None:
    """Draw 0 refreshes at 25 % of life, draw 1 at the last moment that keeps the SDKs'
    window (plus lead) and the reserve of the lifetime."""
    first = policy.spread_refresh(issued_at=T0, expires_at=T0 + lifetime, now=T0, draw=0.0)
    last = policy.spread_refresh(issued_at=T0, expires_at=T0 + lifetime, now=T0, draw=1.0)
    assert first == pytest.approx(0.25 * lifetime)
    assert last == pytest.approx(lifetime - max(policy.min_remaining + LEAD,
                                                RESERVE * lifetime))
    assert lifetime - last >= policy.min_remaining + LEAD - 1e-6


def test_a_25_minute_aws_session_is_spread_where_half_life_jitter_was_clamped_away() -> None:
    """AWS 25 min: the old policy refreshed every draw at one instant; now 165 s apart."""
    old = {AWS.next_refresh(issued_at=T0, expires_at=T0 + 25 * MIN, now=T0, jitter=j)
           for j in (-1.0, 0.0, 1.0)}
    new = [AWS.spread_refresh(issued_at=T0, expires_at=T0 + 25 * MIN, now=T0, draw=d)
           for d in (0.0, 1.0)]
    assert len(old) == 1
    assert new[1] - new[0] == pytest.approx(25 * MIN - 15 * MIN - LEAD - 0.25 * 25 * MIN)


@pytest.mark.parametrize("lifetime", [5 * MIN, 15 * MIN, 20 * MIN],
                         ids=["5m", "15m", "20m"])
def test_a_credential_too_short_for_the_window_refreshes_between_25_and_50_percent(
        lifetime: float) -> None:
    """Nothing can keep 15 min of a 15 min session: spread over [25 %, 50 %] of its life."""
    lo = AWS.spread_refresh(issued_at=T0, expires_at=T0 + lifetime, now=T0, draw=0.0)
    hi = AWS.spread_refresh(issued_at=T0, expires_at=T0 + lifetime, now=T0, draw=1.0)
    assert lo == pytest.approx(0.25 * lifetime)
    assert hi == pytest.approx(0.5 * lifetime)


@given(issued=st.floats(min_value=0, max_value=4e9, allow_nan=False),
       lifetime=st.floats(min_value=60, max_value=48 * HOUR),
       draw=st.floats(allow_nan=False), policy=st.sampled_from([AWS, GCP]))
def test_spread_refresh_keeps_the_window_whenever_the_credential_can(
        issued: float, lifetime: float, draw: float, policy: Policy) -> None:
    """Any draw: at least a quarter of life, and the hand-out window plus lead kept if it fits."""
    delay = policy.spread_refresh(issued_at=issued, expires_at=issued + lifetime, now=issued,
                                  draw=draw)
    slack = 1e-3
    assert delay >= max(1.0, 0.25 * lifetime) - slack
    fits = lifetime * 0.75 > policy.min_remaining + LEAD
    if fits:
        assert lifetime - delay >= policy.min_remaining + LEAD - slack
        assert lifetime - delay >= RESERVE * lifetime - slack
    else:
        assert delay <= max(1.0, 0.5 * lifetime) + slack


TIMES = st.floats(min_value=-1e12, max_value=1e12, allow_nan=False)


@given(issued=TIMES, expires=TIMES, now=TIMES, draw=st.floats())
def test_spread_and_resume_are_always_finite_and_at_least_one_second(
        issued: float, expires: float, now: float, draw: float) -> None:
    """For any inputs (NaN draws included) the delay is finite and never below 1 s."""
    for delay in (AWS.spread_refresh(issued_at=issued, expires_at=expires, now=now, draw=draw),
                  AWS.resume_refresh(expires_at=expires, now=now, draw=draw)):
        assert math.isfinite(delay)
        assert delay >= 1.0


def test_recovered_credentials_are_replaced_within_their_remaining_safe_time() -> None:
    """A credential with 40 min left: replaced between now and 40 - 16 min from now; one
    with 50 min left keeps 40 % of them in reserve."""
    left = 40 * MIN
    lo = AWS.resume_refresh(expires_at=T0 + left, now=T0, draw=0.0)
    hi = AWS.resume_refresh(expires_at=T0 + left, now=T0, draw=1.0)
    assert lo == 1.0
    assert hi == pytest.approx(left - 15 * MIN - LEAD)
    assert AWS.resume_refresh(expires_at=T0 + 50 * MIN, now=T0, draw=1.0) == pytest.approx(
        50 * MIN * (1 - RESERVE))
    assert AWS.resume_refresh(expires_at=T0 + 10 * MIN, now=T0, draw=0.9) == 1.0


def test_draws_are_deterministic_per_node_and_target() -> None:
    """The same node and target draw the same sequence after a restart; others differ."""
    one, again, other = Spread("node-a"), Spread("node-a"), Spread("node-b")
    seq = [one.draw("t") for _ in range(5)]
    assert seq == [again.draw("t") for _ in range(5)]
    assert seq != [other.draw("t") for _ in range(5)]
    assert seq[0] == seed("node-a", "t")
    assert seq[1] == pytest.approx((seq[0] + GOLDEN) % 1.0)


def test_draws_of_many_targets_fill_the_unit_interval_evenly() -> None:
    """1,000 (node, target) seeds: every tenth of the window gets 60-140 of them."""
    draws = [Spread(f"node-{i}").draw("t") for i in range(1000)]
    counts = [sum(1 for d in draws if k / 10 <= d < (k + 1) / 10) for k in range(10)]
    assert all(60 <= c <= 140 for c in counts), counts
    one = Spread("n")
    cycles = [one.draw("t") for _ in range(100)]  # one target's cycles: also even
    assert all(6 <= sum(1 for d in cycles if k / 10 <= d < (k + 1) / 10) <= 14
               for k in range(10))


def test_node_id_is_the_kubernetes_node_then_the_host_name() -> None:
    """NODE_NAME (downward API) wins: a replaced DaemonSet pod keeps its node's draws."""
    assert default_node_id({"NODE_NAME": "ip-10-0-0-1"}) == "ip-10-0-0-1"
    assert default_node_id({}) != ""


def test_budgeted_transient_retries_cap_lower_but_permanent_ones_do_not() -> None:
    """With budgets bounding the call rate, transient retries cap at TRANSIENT_CAP (the
    STS that comes back is seen within 30 s); a permanent failure still waits 5 min."""
    policy = Policy(min_remaining=15 * 60.0, transient_cap=TRANSIENT_CAP)
    assert policy.retry_delay(failures=20, permanent=False, jitter=1.0, now=T0,
                              replace_by=None) == TRANSIENT_CAP
    assert policy.retry_delay(failures=1, permanent=True, jitter=1.0, now=T0,
                              replace_by=None) == 300.0
    assert AWS.retry_delay(failures=20, permanent=False, jitter=1.0, now=T0,
                           replace_by=None) == 300.0
