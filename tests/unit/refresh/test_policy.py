"""The refresh policy: refresh near half-life, keep the SDKs' window, capped jittered backoff."""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.clouds.aws import MIN_REMAINING as AWS_MIN_REMAINING
from bridge.clouds.gcp import MIN_REMAINING as GCP_MIN_REMAINING
from bridge.refresh.policy import LEAD, Policy

# DESIGN.md: AWS credentials never handed out with < 15 min left, GCP tokens < 3 min 45 s.
AWS = Policy(min_remaining=15 * 60.0)
GCP = Policy(min_remaining=3 * 60.0 + 45)
CAP = 5 * 60.0  # DESIGN.md: "1 s doubling to 5 min"
T0 = 1_700_000_000.0
MIN = 60.0
HOUR = 3600.0
JITTERS = [-1.0, -0.5, 0.0, 0.5, 1.0]
JITTER_IDS = ["j-1", "j-0.5", "j0", "j+0.5", "j+1"]


def test_policy_windows_match_the_design() -> None:
    """The hand-out windows are the SDKs' refresh windows (botocore 15 min, google-auth 225 s)."""
    assert AWS_MIN_REMAINING == 15 * 60
    assert GCP_MIN_REMAINING == 3 * 60 + 45


@pytest.mark.parametrize("jitter", JITTERS, ids=JITTER_IDS)
@pytest.mark.parametrize(
    ("policy", "lifetime"),
    [(AWS, HOUR), (AWS, 2 * HOUR), (AWS, 12 * HOUR), (GCP, HOUR), (GCP, 30 * MIN)],
    ids=["aws-1h", "aws-2h", "aws-12h", "gcp-1h", "gcp-30m"],
)
def test_long_lifetimes_refresh_at_half_plus_minus_ten_percent(policy: Policy, lifetime: float,
                                                                jitter: float) -> None:
    """With room to spare the refresh lands at 45-55 % of the lifetime, window plus lead left."""
    delay = policy.next_refresh(issued_at=T0, expires_at=T0 + lifetime, now=T0, jitter=jitter)
    assert 0.45 * lifetime - 1e-6 <= delay <= 0.55 * lifetime + 1e-6
    assert lifetime - delay >= policy.min_remaining + LEAD


def test_jitter_spreads_the_refresh_instant() -> None:
    """Opposite jitter draws give different instants (targets do not refresh in lockstep)."""
    low = AWS.next_refresh(issued_at=T0, expires_at=T0 + HOUR, now=T0, jitter=-1.0)
    high = AWS.next_refresh(issued_at=T0, expires_at=T0 + HOUR, now=T0, jitter=1.0)
    assert high - low >= 0.1 * HOUR - 1e-6


@pytest.mark.parametrize("jitter", [-50.0, 7.0, math.inf, -math.inf],
                         ids=["-50", "+7", "+inf", "-inf"])
def test_out_of_range_jitter_is_clamped(jitter: float) -> None:
    """A draw outside [-1, 1] never spreads the refresh beyond ±10 % of half-life."""
    delay = AWS.next_refresh(issued_at=T0, expires_at=T0 + HOUR, now=T0, jitter=jitter)
    assert 0.45 * HOUR - 1e-6 <= delay <= 0.55 * HOUR + 1e-6


@pytest.mark.parametrize("jitter", JITTERS, ids=JITTER_IDS)
@pytest.mark.parametrize(
    ("policy", "lifetime"),
    [(AWS, 20 * MIN), (AWS, 25 * MIN), (AWS, 33 * MIN), (AWS, 40 * MIN), (AWS, 15 * MIN),
     (AWS, 5 * MIN), (GCP, 5 * MIN), (GCP, 8 * MIN), (GCP, 10 * MIN)],
    ids=["aws-20m", "aws-25m", "aws-33m", "aws-40m", "aws-15m", "aws-5m", "gcp-5m", "gcp-8m",
         "gcp-10m"],
)
def test_short_lifetimes_refresh_early_enough_or_at_the_quarter_floor(
        policy: Policy, lifetime: float, jitter: float) -> None:
    """Short credentials refresh so the window still remains, but never before 25 % of life."""
    delay = policy.next_refresh(issued_at=T0, expires_at=T0 + lifetime, now=T0, jitter=jitter)
    at_floor = delay == pytest.approx(0.25 * lifetime)
    assert lifetime - delay >= policy.min_remaining or at_floor
    assert delay >= 0.25 * lifetime - 1e-6
    assert delay <= 0.55 * lifetime + 1e-6


def test_twenty_minute_aws_credential_still_has_the_window_left_at_refresh() -> None:
    """A 20-minute AWS credential is refreshed with at least 15 minutes still on it."""
    for jitter in JITTERS:
        delay = AWS.next_refresh(issued_at=T0, expires_at=T0 + 20 * MIN, now=T0, jitter=jitter)
        assert 20 * MIN - delay >= 15 * MIN


@pytest.mark.parametrize(
    ("issued", "expires", "now"),
    [
        (T0, T0 + HOUR, T0 + 0.9 * HOUR),
        (T0, T0 + HOUR, T0 + 2 * HOUR),
        (T0, T0, T0),
        (T0, T0 - HOUR, T0),
        (T0, T0 + 1.0, T0),
        (T0, T0 + HOUR, T0 + 0.5 * HOUR - 0.25),
    ],
    ids=["past-half", "past-expiry", "zero-lifetime", "negative-lifetime", "one-second-life",
         "just-before-due"],
)
def test_overdue_or_degenerate_refreshes_wait_exactly_one_second(issued: float, expires: float,
                                                                  now: float) -> None:
    """An overdue refresh is never scheduled below 1 s (no hot loop) nor any later."""
    for policy in (AWS, GCP):
        delay = policy.next_refresh(issued_at=issued, expires_at=expires, now=now, jitter=0.0)
        assert delay == 1.0


def test_refresh_delay_counts_from_now() -> None:
    """The result is relative to `now`: a later `now` shortens the wait by the same amount."""
    first = AWS.next_refresh(issued_at=T0, expires_at=T0 + HOUR, now=T0, jitter=0.0)
    later = AWS.next_refresh(issued_at=T0, expires_at=T0 + HOUR, now=T0 + 600, jitter=0.0)
    assert first - later == pytest.approx(600)


TIMES = st.floats(min_value=-1e12, max_value=1e12, allow_nan=False)
ANY_JITTER = st.floats(allow_nan=False)


@given(issued=TIMES, expires=TIMES, now=TIMES, jitter=ANY_JITTER,
       min_remaining=st.sampled_from([AWS_MIN_REMAINING, GCP_MIN_REMAINING, 30.0, 0.0]))
def test_next_refresh_is_always_finite_and_at_least_one_second(
        issued: float, expires: float, now: float, jitter: float, min_remaining: float) -> None:
    """For any times and jitter draw the delay is a finite number of seconds, at least 1."""
    delay = Policy(min_remaining=min_remaining).next_refresh(
        issued_at=issued, expires_at=expires, now=now, jitter=jitter)
    assert math.isfinite(delay)
    assert delay >= 1.0


@given(issued=st.floats(min_value=0, max_value=4e9, allow_nan=False),
       lifetime=st.floats(min_value=60, max_value=48 * HOUR),
       jitter=st.floats(min_value=-1, max_value=1),
       policy=st.sampled_from([AWS, GCP]))
def test_refresh_instant_is_between_quarter_and_fifty_five_percent(
        issued: float, lifetime: float, jitter: float, policy: Policy) -> None:
    """Counted from issue, the refresh is in [25 %, 55 %] of life and keeps the window if it can."""
    delay = policy.next_refresh(issued_at=issued, expires_at=issued + lifetime, now=issued,
                                jitter=jitter)
    slack = 1e-3  # a few ulps of an epoch-sized float
    assert max(1.0, 0.25 * lifetime) - slack <= delay <= max(1.0, 0.55 * lifetime) + slack
    window_kept = lifetime - delay >= policy.min_remaining - slack
    assert window_kept or delay <= 0.25 * lifetime + slack or delay == 1.0


# --- retries -------------------------------------------------------------------------------

def _retry(failures: int, *, jitter: float = 1.0, permanent: bool = False,
           replace_by: float | None = None, policy: Policy = AWS) -> float:
    return policy.retry_delay(failures=failures, permanent=permanent, jitter=jitter, now=T0,
                              replace_by=replace_by)


@pytest.mark.parametrize("jitter", [0.0, 0.37, 1.0], ids=["j0", "j0.37", "j1"])
def test_backoff_doubles_from_one_second_within_75_to_100_percent(jitter: float) -> None:
    """Each step is 75-100 % of twice the previous nominal step, capped (Vault's shape)."""
    nominal = 1.0
    first = _retry(1, jitter=jitter)
    assert 0.75 * nominal <= first <= nominal
    for failures in range(2, 16):
        nominal = min(CAP, 2 * nominal)
        delay = _retry(failures, jitter=jitter)
        assert 0.75 * nominal <= delay <= nominal, (failures, delay)


def test_backoff_steps_grow_until_the_cap() -> None:
    """At full jitter the delay strictly grows with each failure until it reaches the cap."""
    delays = [_retry(n, jitter=1.0) for n in range(1, 12)]
    grown = [b > a for a, b in itertools.pairwise(delays) if b < CAP]
    assert all(grown)
    assert delays[-1] == CAP


@pytest.mark.parametrize("failures", [9, 10, 20, 100, 10**6, 10**12],
                         ids=["9", "10", "20", "100", "1e6", "1e12"])
@pytest.mark.parametrize("jitter", [0.0, 0.5, 1.0], ids=["j0", "j0.5", "j1"])
def test_backoff_is_capped_at_five_minutes(failures: int, jitter: float) -> None:
    """However many failures, the wait never exceeds 5 minutes."""
    delay = _retry(failures, jitter=jitter)
    assert delay <= CAP
    assert math.isfinite(delay)


@pytest.mark.parametrize("jitter", [0.0, 0.5, 1.0], ids=["j0", "j0.5", "j1"])
def test_permanent_failures_go_straight_to_the_cap(jitter: float) -> None:
    """A permanent failure is not retried quickly: the first wait is already the capped step."""
    delay = _retry(1, jitter=jitter, permanent=True)
    assert 0.75 * CAP <= delay <= CAP


@pytest.mark.parametrize(("failures", "left"), [(12, 42.0), (9, 100.0), (1, 0.5), (30, 2.0)],
                         ids=["capped-42s", "capped-100s", "below-a-second", "two-seconds"])
def test_backoff_never_waits_past_the_replacement_deadline(failures: int, left: float) -> None:
    """With a credential in hand, the retry comes by `replace_by` (but never below 1 s)."""
    delay = _retry(failures, replace_by=T0 + left)
    assert 1.0 <= delay <= max(1.0, left)


def test_a_distant_replacement_deadline_does_not_shorten_the_backoff() -> None:
    """A deadline further away than the backoff step leaves the step untouched."""
    assert _retry(5, replace_by=T0 + HOUR) == _retry(5, replace_by=None)


def test_after_a_success_the_caller_restarts_at_one_second() -> None:
    """Reset is the caller's: failures=1 (the first after a success) waits about a second."""
    for jitter in (0.0, 0.5, 1.0):
        assert 0.75 <= _retry(1, jitter=jitter) <= 1.0 + 1e-9


@given(failures=st.integers(min_value=1, max_value=10**9), permanent=st.booleans(),
       jitter=st.floats(allow_nan=False), now=TIMES,
       replace_by=st.none() | TIMES)
def test_retry_delay_is_always_between_one_second_and_the_cap(
        failures: int, permanent: bool, jitter: float, now: float,
        replace_by: float | None) -> None:
    """For any failure count, jitter and deadline the wait is finite, >= 1 s and <= 5 min."""
    delay = AWS.retry_delay(failures=failures, permanent=permanent, jitter=jitter, now=now,
                            replace_by=replace_by)
    assert math.isfinite(delay)
    assert 1.0 <= delay <= CAP


# --- hand-out window -----------------------------------------------------------------------

@pytest.mark.parametrize(
    ("policy", "left", "ok"),
    [(AWS, 15 * MIN, True), (AWS, 15 * MIN - 1, False), (AWS, HOUR, True), (AWS, -1.0, False),
     (GCP, 225.0, True), (GCP, 224.0, False), (GCP, 0.0, False)],
    ids=["aws-exactly-15m", "aws-under-15m", "aws-1h", "aws-expired", "gcp-exactly-225s",
         "gcp-under", "gcp-expiring-now"],
)
def test_hand_out_only_while_the_sdk_window_remains(policy: Policy, left: float,
                                                    ok: bool) -> None:
    """A credential is handed out only while at least the SDK refresh window remains."""
    assert policy.hand_out_ok(expires_at=T0 + left, now=T0) is ok
