"""Phase-locked refresh (`refresh.node_index`): every refresh lands on its target's
wall-clock phase, inside the safe window, and a numbered fleet's phases of one class are
a lattice: every point taken once, so each scope sees evenly spaced calls."""

from __future__ import annotations

import math
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.refresh.policy import MIN_DELAY, Policy
from bridge.refresh.spread import Locked, Spread, spread_ranks, step, van_der_corput

AWS = Policy(min_remaining=15 * 60.0)
GCP = Policy(min_remaining=3 * 60.0 + 45)
T0 = 1_800_000_123.4  # wall-clock seconds
HOUR = 3600.0
AWS_1H = ("aws_sts 111122223333 us-east-1",)


def _on_phase(at: float, period: float, phase: float) -> bool:
    return abs(((at / period - phase + 0.5) % 1.0) - 0.5) * period < 1e-3


@pytest.mark.parametrize(("policy", "lifetime"), [(AWS, HOUR), (AWS, 900.0), (AWS, 1500.0),
                                                   (GCP, HOUR), (AWS, 12 * HOUR)])
def test_each_refresh_is_on_its_phase_and_inside_the_window_and_the_next_one_too(
        policy: Policy, lifetime: float) -> None:
    """From any issue time the refresh lands on the phase at or before the window's end;
    from a refresh on the phase, the next one is exactly one period later."""
    period = policy.lock_period(lifetime)
    assert period is not None
    earliest_offset, latest_offset = policy.safe_window(issued_at=0.0, expires_at=lifetime)
    assert period == math.floor((earliest_offset + latest_offset) / 2)
    phase = 0.3137
    for start in (T0, T0 + 17.9, T0 + period * 0.99):
        at = start + policy.locked_refresh(issued_at=start, expires_at=start + lifetime,
                                           now=start, phase=phase)
        _, latest = policy.safe_window(issued_at=start, expires_at=start + lifetime)
        assert _on_phase(at, period, phase)
        assert start + MIN_DELAY <= at <= latest
        # Steady state: issued at the phase (plus a call's latency), next at one period.
        issued = at + 0.4
        following = issued + policy.locked_refresh(
            issued_at=issued, expires_at=issued + lifetime - 0.7, now=issued, phase=phase)
        assert following == pytest.approx(at + period, abs=1e-6)


def test_the_wall_clock_offset_places_the_phase_in_wall_time() -> None:
    """The scheduler passes monotonic times and wall minus monotonic: the instant is on
    the phase in wall time, whatever the monotonic clock reads."""
    wall_offset = T0 - 5000.0  # monotonic 5000 s is wall T0
    mono = 5000.0
    delay = AWS.locked_refresh(issued_at=mono, expires_at=mono + HOUR, now=mono, phase=0.5,
                               wall_offset=wall_offset)
    assert _on_phase(mono + delay + wall_offset, AWS.lock_period(HOUR) or 0.0, 0.5)


def test_lifetimes_within_half_a_minute_share_one_period_and_short_ones_are_spread() -> None:
    """A lifetime read off a response (latency, a Date to the second) rounds to the
    same period on every node; under two minutes there is no lock (the spread draw)."""
    assert AWS.lock_period(HOUR - 2.3) == AWS.lock_period(HOUR + 1.0) == 1530.0
    assert AWS.lock_period(80.0) is None
    delay = AWS.locked_refresh(issued_at=T0, expires_at=T0 + 80.0, now=T0, phase=0.5)
    assert delay == AWS.spread_refresh(issued_at=T0, expires_at=T0 + 80.0, now=T0, draw=0.5)


def test_a_credential_shorter_than_its_kind_falls_back_to_its_spread_point() -> None:
    """Kept chain links can bound a credential below what its lifetime rounds to: its
    phase is then already past, and it is refreshed at its spread point, never at once."""
    now = T0
    # Lifetime 3600 rounds to the 2130 s period, but this one has 1300 s left of a
    # credential issued 2300 s ago.
    delay = AWS.locked_refresh(issued_at=now - 2300.0, expires_at=now + 1300.0, now=now,
                               phase=0.9)
    assert delay >= MIN_DELAY
    assert now + delay <= now + 1300.0 - AWS.min_remaining


@given(st.floats(min_value=0, max_value=0.999999), st.floats(min_value=120, max_value=43200),
       st.floats(min_value=-1e6, max_value=1e6))
def test_locked_refresh_is_always_finite_at_least_a_second_and_never_past_expiry(
        phase: float, lifetime: float, shift: float) -> None:
    issued = T0 + shift
    delay = GCP.locked_refresh(issued_at=issued, expires_at=issued + lifetime, now=issued,
                               phase=phase)
    assert math.isfinite(delay)
    assert MIN_DELAY <= delay < lifetime


@pytest.mark.parametrize(("size", "nodes"), [(1, 1000), (3, 1000), (6, 997), (8, 5000)])
def test_a_class_takes_every_lattice_point_once_and_a_nodes_members_are_spread(
        size: int, nodes: int) -> None:
    """Across `nodes` numbered bridges with `size` targets of one class each, the phases
    are exactly the `size * nodes` points of the lattice; on one node they are 1/size
    apart (to within one member's spacing)."""
    order = [Locked(f"t{r}", AWS_1H, HOUR) for r in range(size)]
    m = size * nodes
    seen: set[int] = set()
    for i in range(nodes):
        spread = Spread("n", index=i, nodes=nodes, order=order)
        phases = sorted(spread.phase(f"t{r}") or 0.0 for r in range(size))
        gaps = [b - a for a, b in zip(phases, [*phases[1:], phases[0] + 1.0], strict=True)]
        assert all(g == pytest.approx(1.0 / size, abs=1.0 / nodes) for g in gaps)
        base = Spread("n", index=0, nodes=nodes, order=order).phase("t0") or 0.0
        seen.update(round(((p - base) % 1.0) * m) % m for p in phases)
    assert len(seen) == m


def test_one_members_own_points_and_a_second_regions_block_are_evenly_spread() -> None:
    """A chain's later scope sees one member's points only, and a global scope sees
    every region's block: one member's are an exact lattice, and two members of two
    blocks stay within two calls of even per bucket."""
    nodes, size, buckets = 2000, 8, 400
    order = [Locked(f"t{r}", ("gcp_sts 1",), HOUR) for r in range(size)]
    one = Counter()
    both = Counter()
    for block in (0, 1):
        for i in range(nodes):
            s = Spread("n", index=block * nodes + i, nodes=nodes, order=order)
            for name in ("t6", "t7"):
                b = int((s.phase(name) or 0.0) * buckets)
                both[b] += 1
                if block == 0 and name == "t6":
                    one[b] += 1
    assert max(one.values()) <= nodes / buckets + 1  # an exact lattice: 5 a bucket
    assert max(both.values()) <= 4 * nodes / buckets + 2  # 20 a bucket on average


def test_the_phase_depends_on_the_index_and_class_not_on_the_node_name() -> None:
    """Two bridges with the same number get the same phase (the name seeds only the
    unnumbered draws); without an index there is no phase."""
    order = [Locked("a", AWS_1H, HOUR), Locked("b", AWS_1H, HOUR)]
    assert Spread("x", index=7, nodes=10, order=order).phase("a") == Spread(
        "y", index=7, nodes=10, order=order).phase("a")
    assert Spread("x", index=7, nodes=10, order=order).phase("a") != Spread(
        "x", index=8, nodes=10, order=order).phase("a")
    assert Spread("x", order=order).phase("a") is None
    unknown = Spread("x", index=7, nodes=10, order=order).phase("workload-target")
    assert unknown is not None
    assert 0.0 <= unknown < 1.0


def test_lattice_helpers() -> None:
    assert spread_ranks(8) == [0, 4, 2, 6, 1, 5, 3, 7]
    assert sorted(spread_ranks(6)) == list(range(6))
    assert [van_der_corput(n) for n in range(4)] == [0.0, 0.5, 0.25, 0.75]
    assert step(1000, 8) == 1001
    assert step(999, 3) == 1000
    assert step(1000, 1) == 1000
