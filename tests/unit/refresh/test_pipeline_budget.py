"""Pipelines with budgets and coalescing, on a virtual clock: a throttling storm is
absorbed (slower, never permanent), identical exchanges share one call."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import CollectorRegistry

from bridge.clouds.aws import MIN_REMAINING as AWS_MIN_REMAINING
from bridge.logs import Redactor
from bridge.metrics import Metrics
from bridge.model import State
from bridge.refresh.budget import BudgetConfig, Budgets
from bridge.refresh.coalesce import Coalescer
from bridge.refresh.limits import Limits
from bridge.refresh.pipeline import TargetPipeline
from bridge.refresh.policy import Policy
from bridge.refresh.scheduler import Scheduler
from bridge.refresh.spread import Spread
from bridge.store import CredentialStore
from bridge.testing import FakeClock
from tests.unit.refresh.test_scheduler import ScriptedHop, ScriptedSource, _target, _throttled


class Rig:
    def __init__(self, names: tuple[str, ...], *, rate: float, coalesce: bool = False) -> None:
        self.clock = FakeClock()
        self.source = ScriptedSource(self.clock)
        self.hop = ScriptedHop(self.clock)
        self.store = CredentialStore(names)
        self.metrics = Metrics(CollectorRegistry())
        self.budgets = Budgets(BudgetConfig(scope_rates={self.hop.scope: rate}),
                               clock=self.clock, fill=lambda s: 1.0, observer=self.metrics)
        coalescer = Coalescer(self.clock.monotonic) if coalesce else None
        limits = Limits(64)
        self.pipelines = [TargetPipeline(_target(n), source=self.source, hops=[self.hop],
                                         monotonic=self.clock.monotonic, now=self.clock.time,
                                         limits=limits, budgets=self.budgets,
                                         coalescer=coalescer) for n in names]
        self.scheduler = Scheduler(self.pipelines, store=self.store, clock=self.clock,
                                   metrics=self.metrics, redactor=Redactor(),
                                   policy=Policy(min_remaining=AWS_MIN_REMAINING),
                                   spread=Spread("n"))


async def test_a_throttling_storm_is_absorbed_without_permanent_failure() -> None:
    """20 targets, the first 30 calls throttled: every target ends fresh, none is marked
    permanent, the budget's rate was cut and the throttles were counted."""
    names = tuple(f"t{i}" for i in range(20))
    rig = Rig(names, rate=5.0)
    rig.hop.errors = [_throttled() for _ in range(30)]
    task = asyncio.create_task(rig.scheduler.run())
    for _ in range(12):
        await rig.clock.advance(10)
    snapshot = rig.store.snapshot()
    assert all(s.state is State.FRESH for s in snapshot.values()), {
        n: s.state for n, s in snapshot.items()}
    assert all(rig.metrics.sample("spiffe_bridge_permanent_failure", target=n) == 0
               for n in names)
    assert rig.metrics.sample("spiffe_bridge_quota_throttles_total",
                              scope=rig.hop.scope) == 30
    assert rig.metrics.sample("spiffe_bridge_quota_calls_total", scope=rig.hop.scope) \
        == rig.hop.calls
    task.cancel()
    rig.budgets.close()


async def test_the_budget_bounds_the_call_rate_of_a_cold_start() -> None:
    """100 targets at 2 calls/s: after 10 s at most ~22 calls were made, all 100 by 55 s."""
    names = tuple(f"t{i}" for i in range(100))
    rig = Rig(names, rate=2.0)
    task = asyncio.create_task(rig.scheduler.run())
    await rig.clock.advance(10)
    assert rig.hop.calls <= 23
    await rig.clock.advance(45)
    assert rig.hop.calls == 100
    task.cancel()
    rig.budgets.close()


async def test_identical_exchanges_share_one_call() -> None:
    """Three targets with the same subject, audience and hop: one STS call serves all."""
    rig = Rig(("a", "b", "c"), rate=100.0, coalesce=True)
    task = asyncio.create_task(rig.scheduler.run())
    await rig.clock.advance(1)
    assert rig.hop.calls == 1
    creds = {n: s.credential for n, s in rig.store.snapshot().items()}
    assert all(c is not None and c.target == n for n, c in creds.items())
    assert len({c.material for c in creds.values() if c is not None}) == 1
    task.cancel()
    rig.budgets.close()


class _Second:
    """A second hop (AssumeRole-like) that fails as told, then passes its input on."""

    name = "aws_assume_role"
    scope = "aws_sts other"
    judge = "aws_sts"

    def __init__(self) -> None:
        self.calls = 0
        self.errors: list[Exception] = []

    def exchange(self, material: object) -> object:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return material


async def test_a_chain_retries_from_the_failed_hop_while_the_earlier_material_is_young(
        ) -> None:
    """Hop 2 unavailable twice: the retries call hop 2 only (hop 1's session is kept);
    a token problem at hop 2 starts again from a fresh SVID and hop 1."""
    from bridge.errors import ExchangeError
    from bridge.refresh.pipeline import Timings

    clock = FakeClock()
    first, second = ScriptedHop(clock), _Second()
    pipeline = TargetPipeline(_target("c"), source=ScriptedSource(clock), hops=[first, second],
                              monotonic=clock.monotonic, now=clock.time)
    down = ExchangeError("down", hop="aws_assume_role", code="ServiceUnavailable",
                         retryable=True, reason="unavailable")
    second.errors = [down, down]
    for _ in range(2):
        with pytest.raises(ExchangeError):
            await pipeline.refresh(Timings())
    credential, _ = await pipeline.refresh(Timings())
    assert (first.calls, second.calls) == (1, 3)
    assert credential.received == 0.0  # bounded by the kept session: issued at the start
    second.errors = [ExchangeError("bad token", hop="aws_assume_role", code="InvalidIdentityToken",
                                   retryable=True, reason="invalid_token", fresh_svid=True)]
    await pipeline.refresh(Timings())
    assert first.calls == 3  # both tries of the fresh-SVID retry start from hop 1
