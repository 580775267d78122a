"""A discrete-event model of a fleet of bridges, running the bridge's own decision code.

No threads, no sockets, no asyncio: a heap of events on a virtual clock. What decides
*when* a bridge calls is the bridge's own code, imported, not re-implemented:
`Spread.refresh_in` / `resume_in` (the policy's spread draws, or with numbered nodes its
phase lock) and `Policy.retry_delay`, and a
`ScopeBudget` + `DeadlineQueue` per node and quota scope (what `Budgets` runs in the
daemon), or, for today's behaviour (main before the fleet work), `Policy.next_refresh`
with a random ±1 jitter draw, no budgets, and recovered credentials refreshed at once.

What is modelled, not run: the scheduler's control flow (refresh when due, retry with
backoff, the fresh-SVID retry on an invalid token, replace-by for retries while a
credential is held; `bridge.refresh.scheduler`), the pipeline's hop order, its budget
wait before each hop and its kept material (a retry starts from the hops a failed try
completed: while they are young, or, holding nothing it may hand out, while they
leave `Policy.least_useful_life`), and the clouds: each quota scope answers at most its
quota per 1 s bucket and throttles the rest (`Throttling`), and scenario faults
(a regional outage, a JWKS that does not know the new key yet). Calls take no time.
"""

from __future__ import annotations

import heapq
import itertools
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from bridge.clouds.aws.cloud import MIN_REMAINING as AWS_MIN_REMAINING
from bridge.clouds.aws.quota import STS_RATE as AWS_STS_RATE
from bridge.clouds.gcp.cloud import MIN_REMAINING as GCP_MIN_REMAINING
from bridge.clouds.gcp.quota import IAM_RATE as GCP_IAM_RATE
from bridge.clouds.gcp.quota import STS_RATE as GCP_STS_RATE
from bridge.refresh.budget import SHARE, BudgetConfig, DeadlineQueue, ScopeBudget
from bridge.refresh.pipeline import KEEP_FOR
from bridge.refresh.policy import TRANSIENT_CAP, Policy
from bridge.refresh.spread import Locked, Spread, seed

OK, THROTTLED, UNAVAILABLE, INVALID = "ok", "throttled", "unavailable", "invalid_token"
AWS_ACCOUNTS = ("111111111111", "222222222222", "333333333333", "444444444444")
REGIONS = ("us-east-1", "eu-west-1")
GCP_PROJECT = "123456"


@dataclass(frozen=True)
class Kind:
    """One kind of target: its hops' quota scopes (as functions of the node's region
    and the target's account) and its credential lifetime."""

    name: str
    hops: tuple[str, ...]  # templates: {account} {region}
    lifetime: float
    final: str  # aws | gcp: whose SDK window applies


AWS_1H = Kind("aws-1h", ("aws_sts {account} {region}",), 3600.0, "aws")
AWS_25M = Kind("aws-25m", ("aws_sts {account} {region}",), 1500.0, "aws")
AWS_15M = Kind("aws-15m", ("aws_sts {account} {region}",), 900.0, "aws")
GCP_1H = Kind("gcp-1h", (f"gcp_sts {GCP_PROJECT}",), 3600.0, "gcp")
AWS_CHAIN = Kind("aws-chain", ("aws_sts {account} {region}", "aws_sts {account} {region}"),
                 3600.0, "aws")
GCP_AWS_CHAIN = Kind("gcp-aws-chain", (f"gcp_sts {GCP_PROJECT}", f"gcp_iam {GCP_PROJECT}",
                                       "aws_sts {account} {region}"), 3600.0, "aws")
# 20 targets a node: 10 AWS web identity (1 h, 25 min, 15 min sessions), 6 GCP, 2 AWS
# role chains, 2 GCP -> AWS chains.
MIX: tuple[Kind, ...] = (AWS_1H,) * 6 + (AWS_25M,) * 2 + (AWS_15M,) * 2 + (GCP_1H,) * 6 + (
    AWS_CHAIN,) * 2 + (GCP_AWS_CHAIN,) * 2


def quota_of(scope: str) -> float:
    """The published quota of a scope (the bridge's own figures)."""
    if scope.startswith("aws_sts"):
        return AWS_STS_RATE
    if scope.startswith("gcp_iam"):
        return GCP_IAM_RATE
    return GCP_STS_RATE


# What the daemon builds (`scheduler._policy_for`): with budgets, transient retries cap
# at TRANSIENT_CAP; today's cap is the backoff's 5 min.
POLICIES = {True: {"aws": Policy(min_remaining=AWS_MIN_REMAINING, transient_cap=TRANSIENT_CAP),
                   "gcp": Policy(min_remaining=GCP_MIN_REMAINING, transient_cap=TRANSIENT_CAP)},
            False: {"aws": Policy(min_remaining=AWS_MIN_REMAINING),
                    "gcp": Policy(min_remaining=GCP_MIN_REMAINING)}}


@dataclass(eq=False)
class Target:
    node: int
    name: str
    kind: Kind
    scopes: tuple[str, ...]
    policy: Policy
    deadline: float | None = None  # the credential held: valid until (virtual time)
    received: float = 0.0
    generation: int = 0   # bumped per credential (expiry events of older ones are void)
    epoch: int = 0        # bumped per process restart (events of older processes void)
    failures: int = 0
    hop: int = 0
    fresh_retry: bool = False
    started: float = 0.0  # when the attempt's first hop was asked (its `received`)
    kept_hop: int = 0     # hops a failed attempt completed, kept for the retry (pipeline)
    kept_started: float = 0.0
    ever: bool = False    # has held a credential


@dataclass
class Faults:
    """Scenario faults at the clouds, as functions of time and scope."""

    down: Callable[[float, str], bool] = lambda t, scope: False
    invalid: Callable[[float, str], bool] = lambda t, scope: False


@dataclass
class Stats:
    start: float
    end: float
    calls: dict[str, list[int]] = field(default_factory=dict)      # per 1 s bucket
    throttled: dict[str, int] = field(default_factory=dict)
    lapses: int = 0
    headroom: list[float] = field(default_factory=list)
    valid: list[int] = field(default_factory=list)  # targets holding a credential, per 10 s

    def bucket(self, scope: str) -> list[int]:
        b = self.calls.get(scope)
        if b is None:
            b = self.calls[scope] = [0] * int(self.end - self.start + 1)
            self.throttled[scope] = 0
        return b


class Fleet:
    """`nodes` bridges of `MIX` targets; `fleet_work` chooses the bridge's code (True) or
    today's behaviour (False)."""

    def __init__(self, nodes: int, *, fleet_work: bool, start: float, end: float,
                 faults: Faults | None = None, fleet_size: int | None = None,
                 cloud_scale: float = 1.0, rng: random.Random | None = None,
                 mix: tuple[Kind, ...] = MIX, node_name: Callable[[int], str] | None = None,
                 target_name: Callable[[int, Kind], str] | None = None,
                 call_log: list[tuple[float, str, str]] | None = None,
                 numbered: bool = False) -> None:
        self.n = nodes
        self.fleet_work = fleet_work
        # `refresh.node_index` set on every bridge (0..nodes-1): refreshes phase-locked.
        self.numbered = numbered
        self.faults = faults or Faults()
        self.fleet_size = fleet_size or nodes
        # The operators' config: each region's bridges count themselves (`fleet_size`: a
        # regional STS is shared by that region's nodes), and the global GCP project's
        # share is set per scope (`scope_rates`), as the README advises.
        regional = max(1, self.fleet_size // len(REGIONS))
        self._config = BudgetConfig(fleet_size=regional, scope_rates={
            s: SHARE * quota_of(s) / self.fleet_size
            for s in (f"gcp_sts {GCP_PROJECT}", f"gcp_iam {GCP_PROJECT}")})
        # A sampled fleet (cloud_scale = sampled / whole) meets a cloud that enforces the
        # whole quota per window of 1 / cloud_scale seconds: the sample's count in such a
        # window has the distribution of the whole fleet's in one second (a quota scaled
        # per second would throttle on the sample's larger relative noise).
        self.window = max(1, round(1.0 / cloud_scale))
        self.rng = rng or random.Random(17)
        self.mix = mix
        self.node_name = node_name or (lambda i: f"node-{i}")
        self.call_log = call_log  # (time, target, answer) of every call, when given
        self.now = start
        self.stats = Stats(start, end)
        self._events: list[tuple[float, int, int, object, int]] = []
        self._seq = itertools.count()
        self.targets: list[Target] = []
        self._budgets: list[dict[str, ScopeBudget]] = [{} for _ in range(nodes)]
        self._queues: list[dict[str, DeadlineQueue[Target]]] = [{} for _ in range(nodes)]
        self._dispatching: list[set[str]] = [set() for _ in range(nodes)]
        self._names = [target_name(i, kind) if target_name else f"t{i}-{kind.name}"
                       for i, kind in enumerate(mix)]
        self._spreads: list[Spread] = []
        self._second: dict[str, tuple[int, int]] = {}  # scope -> (second, answered in it)
        self.holding = 0
        self.holding_by_kind: dict[str, int] = {k.name: 0 for k in mix}
        for node in range(nodes):
            region = REGIONS[node % len(REGIONS)]
            for i, kind in enumerate(mix):
                account = AWS_ACCOUNTS[i % len(AWS_ACCOUNTS)]
                scopes = tuple(h.format(account=account, region=region) for h in kind.hops)
                self.targets.append(Target(node, self._names[i], kind, scopes,
                                           POLICIES[fleet_work][kind.final]))
        self._spreads = [self._spread(i) for i in range(nodes)]

    # -- the event loop ------------------------------------------------------------------

    def at(self, when: float, kind: int, what: object, epoch: int = 0) -> None:
        heapq.heappush(self._events, (when, next(self._seq), kind, what, epoch))

    def run(self, until: float, on_tick: Callable[[float], None] | None = None) -> None:
        events = self._events
        next_tick = self.now
        while events and events[0][0] <= until:
            when, _, kind, what, epoch = heapq.heappop(events)
            self.now = when
            while on_tick is not None and when >= next_tick:
                on_tick(next_tick)
                next_tick += 10.0
            if kind == _REFRESH:
                t = what
                assert isinstance(t, Target)
                if t.epoch == epoch:
                    t.fresh_retry = False
                    if t.kept_hop and self._reusable(t, when):
                        t.hop, t.started = t.kept_hop, t.kept_started
                    else:
                        t.hop, t.started = 0, when
                    t.kept_hop = 0
                    self._call_hop(t)
            elif kind == _DISPATCH:
                node, scope = what  # type: ignore[misc]
                if epoch == self._node_epoch(node):
                    self._dispatch(node, scope)
            elif kind == _EXPIRE:
                t = what
                assert isinstance(t, Target)
                if t.generation == epoch and t.deadline is not None:
                    t.deadline = None
                    self.holding -= 1
                    self.holding_by_kind[t.kind.name] -= 1
                    if self.stats.start <= when < self.stats.end:
                        self.stats.lapses += 1
            elif kind == _CALL:
                callback = what
                assert callable(callback)
                callback()
        self.now = until
        while on_tick is not None and until >= next_tick:
            on_tick(next_tick)
            next_tick += 10.0

    @staticmethod
    def _reusable(t: Target, when: float) -> bool:
        """The pipeline's rule for kept material (`TargetPipeline._attempt`): young (under
        KEEP_FOR of its life), or, while the target holds nothing it may hand out (none,
        or one inside the SDKs' window), leaving more than `least_useful_life` (the
        scheduler's `reuse_above`)."""
        age = when - t.kept_started
        return age < KEEP_FOR * t.kind.lifetime or (
            (t.deadline is None or when >= t.deadline - t.policy.min_remaining)
            and t.kind.lifetime - age > t.policy.least_useful_life)

    def _spread(self, node: int) -> Spread:
        """A bridge process's spread, as the daemon builds it (`app.daemon`)."""
        # Numbered as the README advises: region by region, each region's bridges (those
        # that count themselves for `fleet_size`) a block of `fleet_size` numbers.
        per_region = -(-self.n // len(REGIONS))
        index = (node % len(REGIONS)) * per_region + node // len(REGIONS) if (
            self.numbered) else None
        mine = self.targets[node * len(self.mix):(node + 1) * len(self.mix)]
        return Spread(self.node_name(node), index=index, nodes=per_region,
                      order=[Locked(t.name, t.scopes, t.kind.lifetime) for t in mine])

    def _node_epoch(self, node: int) -> int:
        return self.targets[node * len(self.mix)].epoch

    # -- what a bridge does ----------------------------------------------------------------

    def start_node(self, node: int, when: float, *, warm: bool = False) -> None:
        """The bridge process of `node` starts (again) at `when`: new budgets and
        spreads (a new process), credentials kept when `warm` (recovered from tmpfs)."""
        self._budgets[node] = {}
        self._queues[node] = {}
        self._dispatching[node] = set()
        self._spreads[node] = self._spread(node)
        for t in self.targets[node * len(self.mix):(node + 1) * len(self.mix)]:
            t.epoch += 1
            t.failures = 0
            if warm and t.deadline is not None and t.deadline > when and self.fleet_work:
                delay = self._spreads[node].resume_in(t.policy, t.name,
                                                      expires_at=t.deadline, now=when)
                self.at(when + delay, _REFRESH, t, t.epoch)
            else:  # today: a recovered credential is refreshed at once
                self.at(when, _REFRESH, t, t.epoch)

    def _budget(self, node: int, scope: str) -> ScopeBudget:
        b = self._budgets[node].get(scope)
        if b is None:
            b = self._budgets[node][scope] = ScopeBudget.start(
                self._config.rate(scope, quota_of(scope)), now=self.now,
                fill=seed(self.node_name(node), scope))
        return b

    def _call_hop(self, t: Target) -> None:
        scope = t.scopes[t.hop]
        if not self.fleet_work:
            self._call(t, scope)
            return
        b = self._budget(t.node, scope)
        queue = self._queues[t.node].setdefault(scope, DeadlineQueue())
        if not queue and b.take(self.now):
            self._call(t, scope)
            return
        due = (t.deadline - t.policy.min_remaining) if t.deadline is not None else -math.inf
        queue.push(due, t)
        if scope not in self._dispatching[t.node]:
            self._dispatching[t.node].add(scope)
            self.at(b.available_at(self.now), _DISPATCH, (t.node, scope), t.epoch)

    def _dispatch(self, node: int, scope: str) -> None:
        b = self._budgets[node][scope]
        queue = self._queues[node][scope]
        epoch = self._node_epoch(node)
        for t in queue.grant(b, self.now, skip=lambda x: x.epoch != epoch):
            self._call(t, scope)
        if queue:
            self.at(max(self.now + 1e-3, b.available_at(self.now)), _DISPATCH,
                    (node, scope), epoch)
        else:
            self._dispatching[node].discard(scope)

    def _call(self, t: Target, scope: str) -> None:
        answer = self._answer(scope)
        if self.call_log is not None:
            self.call_log.append((self.now, t.name, answer))
        if answer == OK:
            t.hop += 1
            if t.hop < len(t.scopes):
                self._call_hop(t)
            else:
                self._succeeded(t)
            return
        if answer == INVALID and not t.fresh_retry:
            t.fresh_retry = True  # the pipeline's one retry at once with a fresh SVID
            t.hop, t.started = 0, self.now
            self._call_hop(t)
            return
        if answer == THROTTLED and self.fleet_work:
            self._budget(t.node, scope).throttled(self.now)
        if t.hop > 0 and answer != INVALID and self.fleet_work:  # the pipeline keeps what
            # the earlier hops made (a token problem starts again from a fresh SVID)
            t.kept_hop, t.kept_started = t.hop, t.started
        t.failures += 1
        replace_by = t.deadline - t.policy.min_remaining if t.deadline is not None else None
        delay = t.policy.retry_delay(failures=t.failures, permanent=False,
                                     jitter=self.rng.random(), now=self.now,
                                     replace_by=replace_by)
        self.at(self.now + delay, _REFRESH, t, t.epoch)

    def _answer(self, scope: str) -> str:
        now = self.now
        stats = self.stats
        if stats.start <= now < stats.end:
            stats.bucket(scope)[int(now - stats.start)] += 1
        if self.faults.down(now, scope):
            return UNAVAILABLE
        second, answered = self._second.get(scope, (-1, 0))
        if math.floor(now / self.window) != second:
            second, answered = math.floor(now / self.window), 0
        if answered >= quota_of(scope):
            if stats.start <= now < stats.end:
                stats.bucket(scope)
                stats.throttled[scope] += 1
            return THROTTLED
        self._second[scope] = (second, answered + 1)
        if self.faults.invalid(now, scope):
            return INVALID
        return OK

    def _succeeded(self, t: Target) -> None:
        now = self.now
        if t.deadline is not None:
            if self.stats.start <= now < self.stats.end:
                self.stats.headroom.append(t.deadline - now)
        else:
            self.holding += 1
            self.holding_by_kind[t.kind.name] += 1
        t.ever = True
        t.generation += 1
        t.deadline = t.started + t.kind.lifetime  # bounded by its first hop's material
        t.received = t.started
        t.failures = 0
        self.at(t.deadline, _EXPIRE, t, t.generation)
        if self.fleet_work:
            delay = self._spreads[t.node].refresh_in(t.policy, t.name, issued_at=t.received,
                                                     expires_at=t.deadline, now=now)
        else:
            delay = t.policy.next_refresh(issued_at=now, expires_at=t.deadline, now=now,
                                          jitter=self.rng.uniform(-1.0, 1.0))
        self.at(now + delay, _REFRESH, t, t.epoch)


_REFRESH, _DISPATCH, _EXPIRE, _CALL = 0, 1, 2, 3
