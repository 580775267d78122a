"""Call budgets per quota scope: a fleet of bridges stays inside the clouds' quotas.

Every cloud call counts against a published quota of its *scope* (an AWS account and
region, a GCP project, ...; `bridge.clouds.Quota`), shared by every bridge that calls
it. Each bridge gets `SHARE` of the scope's rate divided by the fleet size
(`refresh.fleet_size`; or exactly `refresh.scope_rates` per scope), as a token bucket
shared by all its targets. `SHARE` is below 1 because the bridges do not coordinate:
their calls arrive at random, and a fleet spending its whole quota would pass it in
about every other second; at 75 % a second over the quota is rare and never two in a row
in the fleet simulation.

- The bucket holds one second's worth (at least one token), and starts filled to a
  fraction fixed by the node and scope (`spread.seed`), so a fleet started at once calls
  at the quota's rate, not all in the first second.
- Requests wait for a token in deadline order: the credential closest to the moment it
  must be replaced (or a target holding none) goes first.
- A throttling answer (AIMD) halves the scope's rate, at most once a second, down to
  1/64, empties the bucket and honours `Retry-After`; the rate climbs back linearly over
  `RECOVERY` seconds. Throttling is never a permanent failure (the classifiers say so).

`ScopeBudget` and `DeadlineQueue` are pure (times are passed in), so the fleet
simulation runs the same code on a virtual clock; `Budgets` runs them on the daemon's.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

from bridge.clock import Clock

MIN_FACTOR = 1.0 / 64.0  # AIMD floor: a throttled scope still makes progress
DECREASE_EVERY = 1.0     # seconds: throttles within this of the last cut are one event
RECOVERY = 60.0          # seconds for the rate to climb back from 0 to its full value
MAX_RETRY_AFTER = 300.0  # a Retry-After is honoured up to the retry backoff's cap
SHARE = 0.75             # of the quota a fleet's budgets add up to (see the docstring)

T = TypeVar("T")


@dataclass
class ScopeBudget:
    """One scope's token bucket with AIMD; every method takes the (monotonic) time."""

    rate: float       # tokens per second this bridge may spend at full speed
    capacity: float   # at most this many tokens saved up
    tokens: float
    updated: float    # when `tokens` and `factor` were last brought up to date
    factor: float = 1.0
    blocked_until: float = -math.inf
    last_cut: float = -math.inf
    throttles: int = 0

    @classmethod
    def start(cls, rate: float, *, now: float, fill: float) -> ScopeBudget:
        """A bucket of one second's worth (at least 1), `fill` (in [0, 1]) of it full."""
        capacity = max(1.0, rate)
        return cls(rate=rate, capacity=capacity, tokens=capacity * min(1.0, max(0.0, fill)),
                   updated=now)

    def current_rate(self, now: float) -> float:
        self._advance(now)
        return self.rate * self.factor

    def take(self, now: float) -> bool:
        """Spend one token if one is there (and no Retry-After holds the scope)."""
        self._advance(now)
        if now < self.blocked_until or self.tokens < 1.0:
            return False
        self.tokens -= 1.0
        return True

    def available_at(self, now: float) -> float:
        """The earliest time `take` can succeed, if nothing else takes first."""
        self._advance(now)
        at = max(now, self.blocked_until)
        if self.tokens < 1.0:
            at = max(at, now + (1.0 - self.tokens) / (self.rate * self.factor))
        return at

    def throttled(self, now: float, retry_after: float | None = None) -> None:
        """The service said slow down: cut the rate, empty the bucket, honour Retry-After."""
        self._advance(now)
        self.throttles += 1
        if now - self.last_cut >= DECREASE_EVERY:
            self.factor = max(MIN_FACTOR, self.factor * 0.5)
            self.last_cut = now
        self.tokens = min(self.tokens, 0.0)
        if retry_after is not None and retry_after > 0:
            self.blocked_until = max(self.blocked_until,
                                     now + min(retry_after, MAX_RETRY_AFTER))

    def _advance(self, now: float) -> None:
        dt = now - self.updated
        if dt <= 0:
            return
        self.tokens = min(self.capacity, self.tokens + dt * self.rate * self.factor)
        self.factor = min(1.0, self.factor + dt / RECOVERY)
        self.updated = now


@dataclass
class DeadlineQueue(Generic[T]):
    """Waiters for a scope's tokens, served earliest deadline first (FIFO among equals)."""

    _heap: list[tuple[float, int, T]] = field(default_factory=list)
    _seq: itertools.count[int] = field(default_factory=itertools.count)

    def push(self, due: float, item: T) -> None:
        heapq.heappush(self._heap, (due, next(self._seq), item))

    def __len__(self) -> int:
        return len(self._heap)

    def grant(self, budget: ScopeBudget, now: float,
              skip: Callable[[T], bool] = lambda _: False) -> list[T]:
        """Pop every waiter a token can be spent on now, in deadline order (waiters
        `skip` says are gone are dropped without spending)."""
        granted: list[T] = []
        while self._heap:
            item = self._heap[0][2]
            if skip(item):
                heapq.heappop(self._heap)
                continue
            if not budget.take(now):
                break
            heapq.heappop(self._heap)
            granted.append(item)
        return granted


@dataclass(frozen=True, slots=True)
class BudgetConfig:
    """Per-bridge rates: a scope's own (`scope_rates`), else SHARE of its quota divided
    by `fleet_size`."""

    fleet_size: int = 1
    scope_rates: Mapping[str, float] = field(default_factory=dict)

    def rate(self, scope: str, quota_rate: float) -> float:
        return self.scope_rates.get(scope, SHARE * quota_rate / self.fleet_size)


class BudgetObserver(Protocol):
    """What the budgets report (the daemon's metrics)."""

    def scope_added(self, scope: str, rate: Callable[[], float]) -> None: ...

    def called(self, scope: str, waited: float) -> None: ...

    def throttled(self, scope: str) -> None: ...


class _Quiet:
    def scope_added(self, scope: str, rate: Callable[[], float]) -> None:
        pass

    def called(self, scope: str, waited: float) -> None:
        pass

    def throttled(self, scope: str) -> None:
        pass


class Budgets:
    """The daemon's budgets: one per quota scope, shared by every target of a bridge."""

    def __init__(self, config: BudgetConfig, *, clock: Clock,
                 fill: Callable[[str], float],
                 observer: BudgetObserver | None = None) -> None:
        self._config = config
        self._clock = clock
        self._fill = fill
        self._observer: BudgetObserver = observer or _Quiet()
        self._scopes: dict[str, ScopeBudget] = {}
        self._queues: dict[str, DeadlineQueue[asyncio.Future[None]]] = {}
        self._dispatchers: dict[str, asyncio.Task[None]] = {}

    def budget(self, scope: str, quota_rate: float) -> ScopeBudget:
        b = self._scopes.get(scope)
        if b is None:
            b = self._scopes[scope] = ScopeBudget.start(
                self._config.rate(scope, quota_rate), now=self._clock.monotonic(),
                fill=self._fill(scope))
            self._observer.scope_added(scope, lambda: b.current_rate(self._clock.monotonic()))
        return b

    def rates(self) -> dict[str, float]:
        """Each scope's current rate (after throttling), for metrics."""
        now = self._clock.monotonic()
        return {s: b.current_rate(now) for s, b in self._scopes.items()}

    async def acquire(self, scope: str, quota_rate: float, *, due: float) -> float:
        """Wait for one of `scope`'s tokens; returns the seconds waited."""
        b = self.budget(scope, quota_rate)
        queue = self._queues.setdefault(scope, DeadlineQueue())
        start = self._clock.monotonic()
        if not queue and b.take(start):
            self._observer.called(scope, 0.0)
            return 0.0
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        queue.push(due, future)
        if scope not in self._dispatchers:
            self._dispatchers[scope] = asyncio.get_running_loop().create_task(
                self._dispatch(scope, b, queue), name=f"budget:{scope}")
        await future  # cancelled with the refresh: the dispatcher then skips it
        waited = self._clock.monotonic() - start
        self._observer.called(scope, waited)
        return waited

    def throttled(self, scope: str, quota_rate: float, retry_after: float | None) -> None:
        self.budget(scope, quota_rate).throttled(self._clock.monotonic(), retry_after)
        self._observer.throttled(scope)

    async def _dispatch(self, scope: str, b: ScopeBudget,
                        queue: DeadlineQueue[asyncio.Future[None]]) -> None:
        try:
            while queue:
                now = self._clock.monotonic()
                for future in queue.grant(b, now, skip=lambda f: f.done()):
                    future.set_result(None)
                if queue:
                    await self._clock.sleep(max(0.001, b.available_at(now) - now))
        finally:
            self._dispatchers.pop(scope, None)

    def close(self) -> None:
        for task in list(self._dispatchers.values()):
            task.cancel()
