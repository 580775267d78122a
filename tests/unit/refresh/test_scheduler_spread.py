"""The scheduler with a spread: targets started together refresh over the whole safe
window, recovered credentials are replaced over their remaining safe time, and each
target's due time is exported."""

from __future__ import annotations

import asyncio

from prometheus_client import CollectorRegistry

from bridge.clouds.aws import MIN_REMAINING as AWS_MIN_REMAINING
from bridge.clouds.aws import AwsCredentials
from bridge.logs import Redactor
from bridge.metrics import Metrics
from bridge.model import Credential, State
from bridge.refresh.limits import Limits
from bridge.refresh.pipeline import TargetPipeline
from bridge.refresh.policy import LEAD, Policy
from bridge.refresh.scheduler import Scheduler
from bridge.refresh.spread import Spread
from bridge.store import CredentialStore
from bridge.testing import FakeClock
from tests.unit.refresh.test_scheduler import LIFETIME, ScriptedHop, ScriptedSource, _target

POLICY = Policy(min_remaining=AWS_MIN_REMAINING)


def _first_per_target(calls: list[tuple[float, str]]) -> dict[str, float]:
    first: dict[str, float] = {}
    for t, name in calls:
        first.setdefault(name, t)
    return first


class SpreadRig:
    def __init__(self, n: int) -> None:
        self.clock = FakeClock()
        self.source = ScriptedSource(self.clock)
        self.hop = ScriptedHop(self.clock)
        self.names = tuple(f"t{i}" for i in range(n))
        self.store = CredentialStore(self.names)
        self.metrics = Metrics(CollectorRegistry())
        self.calls: list[tuple[float, str]] = []
        limits = Limits(1024)
        self.pipelines = [TargetPipeline(_target(name), source=self.source, hops=[self.hop],
                                         monotonic=self.clock.monotonic, now=self.clock.time,
                                         limits=limits) for name in self.names]
        self.scheduler = Scheduler(self.pipelines, store=self.store, clock=self.clock,
                                   metrics=self.metrics, redactor=Redactor(), policy=POLICY,
                                   spread=Spread("node-a"))
        original = self.scheduler.refresh

        async def counted(p: TargetPipeline) -> object:
            self.calls.append((self.clock.monotonic(), p.target.name))
            return await original(p)
        self.scheduler.refresh = counted  # type: ignore[method-assign, assignment]


async def test_targets_started_together_refresh_over_the_whole_safe_window() -> None:
    """100 targets issued at once: their second refreshes cover > 90 % of the window,
    the earliest after 25 % of life, the latest with the hand-out window plus lead left."""
    rig = SpreadRig(100)
    task = asyncio.create_task(rig.scheduler.run())
    await rig.clock.settle()
    assert len(rig.calls) == 100
    await rig.clock.advance(LIFETIME * 0.8)
    second = list(_first_per_target(rig.calls[100:]).values())
    assert len(second) == 100
    earliest, latest = POLICY.safe_window(issued_at=0.0, expires_at=LIFETIME)
    assert min(second) >= earliest - 1
    assert max(second) <= latest + 1
    assert LIFETIME - max(second) >= AWS_MIN_REMAINING + LEAD - 1
    assert (max(second) - min(second)) >= 0.9 * (latest - earliest)
    task.cancel()


async def test_next_refresh_timestamp_shows_when_each_target_is_due() -> None:
    """The gauge is the wall time of the next refresh: after it, the target refreshes."""
    rig = SpreadRig(3)
    task = asyncio.create_task(rig.scheduler.run())
    await rig.clock.settle()
    due = {n: rig.metrics.sample("spiffe_bridge_next_refresh_timestamp_seconds", target=n)
           for n in rig.names}
    assert all(d is not None and d > rig.clock.time() for d in due.values())
    first = min(d for d in due.values() if d is not None)
    await rig.clock.advance(first - rig.clock.time() + 0.5)
    assert len(rig.calls) == 4
    task.cancel()


async def test_recovered_credentials_are_replaced_spread_not_all_at_start() -> None:
    """50 credentials a previous run left with 50 min to live: none refreshed at start,
    all replaced before the hand-out limit, spread over most of the time left to it."""
    rig = SpreadRig(50)
    left = 50 * 60.0
    for name in rig.names:
        material = AwsCredentials(access_key_id="ASIAOLD", secret_access_key="s" * 40,
                                  session_token="t" * 100,
                                  expires_at=rig.clock.time() + left)
        rig.scheduler.recovered(Credential(
            target=name, issued_at=rig.clock.time(), expires_at=material.expires_at,
            svid_expires_at=0.0, material=material, deadline=rig.clock.monotonic() + left,
            received=rig.clock.monotonic()))
    task = asyncio.create_task(rig.scheduler.run())
    await rig.clock.settle()
    assert rig.calls == []
    limit = left - AWS_MIN_REMAINING - LEAD
    await rig.clock.advance(limit + 1)
    first = _first_per_target(rig.calls)
    assert sorted(first) == sorted(rig.names)
    times = list(first.values())
    assert max(times) - min(times) >= 0.8 * limit
    assert all(s.state is State.FRESH for s in rig.store.snapshot().values())
    task.cancel()
