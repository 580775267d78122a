"""Call budgets per quota scope: the fleet's share of a quota, deadline order, AIMD."""

from __future__ import annotations

import asyncio

import pytest

from bridge.refresh.budget import (
    MIN_FACTOR,
    RECOVERY,
    BudgetConfig,
    Budgets,
    DeadlineQueue,
    ScopeBudget,
)
from bridge.testing import FakeClock


def test_a_bucket_spends_at_most_its_rate_over_time() -> None:
    """At 2/s from empty: 20 tokens in 10 s, never more (one second's worth saved up)."""
    b = ScopeBudget.start(2.0, now=0.0, fill=0.0)
    taken = 0
    t = 0.0
    while t <= 10.0:
        while b.take(t):
            taken += 1
        t += 0.01
    assert 19 <= taken <= 21
    idle = ScopeBudget.start(2.0, now=0.0, fill=1.0)
    assert sum(idle.take(1000.0) for _ in range(10)) == 2  # capacity: one second's worth


def test_the_fleet_share_divides_the_quota_and_a_scope_rate_overrides_it() -> None:
    """75 % of 600/s over 10,000 bridges is 0.045/s each; `scope_rates` wins for its scope."""
    config = BudgetConfig(fleet_size=10_000, scope_rates={"gcp_sts 1": 0.5})
    assert config.rate("aws_sts 1 us-east-1", 600.0) == pytest.approx(0.045)
    assert config.rate("gcp_sts 1", 100.0) == 0.5


def test_a_fleet_started_at_once_calls_at_the_quota_rate_not_in_one_second() -> None:
    """1,000 bridges at 0.1/s each, started together with seed-spread fills: at most
    ~100 first calls in any one second (the fleet's quota), not 1,000 at once."""
    from bridge.refresh.spread import seed
    buckets = [ScopeBudget.start(0.1, now=0.0, fill=seed(f"n{i}", "s")) for i in range(1000)]
    firsts = [b.available_at(0.0) for b in buckets]
    per_second = [sum(1 for f in firsts if s <= f < s + 1) for s in range(10)]
    assert max(per_second) <= 140, per_second
    assert sum(per_second) >= 950


def test_throttling_halves_the_rate_once_a_second_and_recovers_linearly() -> None:
    """A burst of throttles is one cut; the rate climbs back over RECOVERY seconds."""
    b = ScopeBudget.start(10.0, now=0.0, fill=1.0)
    for _ in range(5):
        b.throttled(0.0)
    assert b.current_rate(0.0) == pytest.approx(5.0)
    b.throttled(1.0)
    assert b.current_rate(1.0) == pytest.approx(10.0 * (0.5 + 1 / RECOVERY) * 0.5)
    assert b.current_rate(1.0 + RECOVERY) == pytest.approx(10.0)
    for i in range(20):
        b.throttled(100.0 + i)
    assert b.current_rate(119.0) >= 10.0 * MIN_FACTOR
    assert b.throttles == 26


def test_throttling_empties_the_bucket_and_honours_retry_after() -> None:
    """After a throttle with Retry-After 30 no token is spent for 30 s."""
    b = ScopeBudget.start(100.0, now=0.0, fill=1.0)
    b.throttled(0.0, retry_after=30.0)
    assert not b.take(0.0)
    assert not b.take(29.9)
    assert b.available_at(10.0) == pytest.approx(30.0)
    assert b.take(30.0)


def test_waiters_are_served_closest_deadline_first() -> None:
    """With one token a second, the waiter due soonest gets each token."""
    b = ScopeBudget.start(1.0, now=0.0, fill=0.0)
    q: DeadlineQueue[str] = DeadlineQueue()
    for due, name in [(900.0, "late"), (100.0, "soon"), (500.0, "middle"), (100.0, "soon2")]:
        q.push(due, name)
    order: list[str] = []
    t = 0.0
    while q:
        t = b.available_at(t)
        order += q.grant(b, t)
    assert order == ["soon", "soon2", "middle", "late"]


async def test_budgets_make_waiters_wait_on_the_clock_in_deadline_order() -> None:
    """Async: three refreshes at 1 call/s; the most urgent goes first; waits are counted."""
    clock = FakeClock()
    seen: list[tuple[str, float]] = []

    class Observer:
        def scope_added(self, scope: str, rate: object) -> None:
            pass

        def called(self, scope: str, waited: float) -> None:
            seen.append((scope, waited))

        def throttled(self, scope: str) -> None:
            pass

    budgets = Budgets(BudgetConfig(scope_rates={"s x": 1.0}), clock=clock, fill=lambda s: 0.0,
                      observer=Observer())
    done: list[str] = []

    async def one(name: str, due: float) -> None:
        await budgets.acquire("s x", 100.0, due=due)
        done.append(name)

    tasks = [asyncio.create_task(one(n, d)) for n, d in [("c", 30.0), ("a", 10.0),
                                                          ("b", 20.0)]]
    await clock.settle()
    assert done == []
    await clock.advance(1.0)
    assert done == ["a"]
    await clock.advance(2.0)
    assert done == ["a", "b", "c"]
    assert [round(w) for _, w in seen] == [1, 2, 3]
    await asyncio.gather(*tasks)
    budgets.close()
