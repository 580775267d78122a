"""One target's refresh: SVID -> hop -> hop ... -> Credential, with stage timings.

A fresh JWT-SVID is fetched for every exchange (the agent caches; we must not); a
`source: x509` target takes the current X.509-SVID of the watched stream instead. When a
token service says the token itself was the problem (invalid, expired, claim rejected)
the whole chain is tried once more at once with a newly fetched SVID. When a later hop
of a chain fails otherwise, what the hops before it produced is kept for the next try
while it is young (a quarter of its life), so retries spend only the failing scope's
quota. A target holding no credential it may still hand out (it lapsed, never had one,
or what it holds is inside the SDKs' refresh window) may start from older kept material
while it leaves more than `reuse_above` (a short-lived credential now
beats none: after an outage longer than the lifetime, a GCP -> AWS chain must not wait
for a Google exchange its quota share cannot give it soon); that credential's policy
life starts then, so its next refresh, the whole chain, spreads over what it has left.
The credential's expiry is the earliest expiry among the hops' outputs: nothing outlives
a link it was derived from.

Each hop's call first waits for a token of its quota scope's budget (`budget`, in the
order of `due`: a target holding nothing first, then the credential closest to its
hand-out limit) and tells the budget
when it was throttled. Targets making the identical exchange share one call (`coalesce`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from bridge.clouds import Hop, quota_of
from bridge.config import TargetConfig
from bridge.errors import ExchangeError
from bridge.model import Credential, JwtSvid, Material
from bridge.refresh.budget import Budgets
from bridge.refresh.coalesce import Coalescer
from bridge.refresh.limits import Limits
from bridge.refresh.spread import Locked
from bridge.sources import SvidSource, X509Svids
from bridge.x509_svid import X509Svid

SOURCE_SCOPE = "workload_api"


@dataclass
class Timings:
    """Seconds spent per stage in one refresh (`svid`, `exchange`, ...)."""

    stages: dict[str, float] = field(default_factory=dict)

    def add(self, stage: str, seconds: float) -> None:
        self.stages[stage] = self.stages.get(stage, 0.0) + seconds


KEEP_FOR = 0.25  # of an intermediate material's life: how long a retry may start from it


@dataclass(frozen=True, slots=True)
class _Kept:
    """What the hops before a failed one produced, for the retry to start from (a chain
    whose last hop fails must not spend the earlier scopes' quota again on every try)."""

    position: int  # hops done
    material: Material
    svid: JwtSvid | X509Svid
    issued_at: float
    received: float
    expiries: tuple[float, ...]
    deadlines: tuple[float, ...]  # [0] is the SVID's: it bounded only the first call

    def fresh(self, now: float) -> bool:
        """While the materials kept are young (a quarter of their life): the credential
        they lead to is bounded by them, so it must not start out old."""
        return self.left(now) > (1.0 - KEEP_FOR) * (min(self.deadlines[1:]) - self.received)

    def left(self, now: float) -> float:
        """Seconds until the earliest of the kept materials expires."""
        return min(self.deadlines[1:]) - now


class TargetPipeline:
    """One target's chain: a fresh JWT-SVID, then each hop in turn."""

    def __init__(self, target: TargetConfig, *, source: SvidSource, hops: Sequence[Hop],
                 monotonic: Callable[[], float], now: Callable[[], float],
                 limits: Limits | None = None, budgets: Budgets | None = None,
                 coalescer: Coalescer | None = None, x509: X509Svids | None = None) -> None:
        self.target = target
        self._source = source
        self._x509 = x509  # for a `source: x509` target
        self._hops = list(hops)
        self._monotonic = monotonic
        self._now = now
        self._limits = limits or Limits(32)  # the daemon shares one across its targets
        self._budgets = budgets
        self._coalescer = coalescer
        # What makes two targets' exchanges identical (hop configs are frozen values).
        self._key = (target.source, target.audience, target.spiffe_id, target.hops)
        self._kept: _Kept | None = None

    @property
    def locked(self) -> Locked:
        """What the phase lock needs of this target: its hops' quota scopes and the
        lifetime its last hop asks for (`spread.Locked`)."""
        last = self.target.hops[-1] if self.target.hops else None
        lifetime = getattr(last, "duration", None) or getattr(last, "lifetime", None)
        return Locked(self.target.name, tuple(quota_of(h).scope for h in self._hops),
                      float(lifetime) if isinstance(lifetime, (int, float)) else None)

    async def fetch_svid(self, timings: Timings) -> JwtSvid:
        start = self._monotonic()
        try:
            judge = self._hops[0].judge if self._hops else None
            return await self._limits.run(SOURCE_SCOPE, self._source.fetch,
                                          self.target.audience, self.target.spiffe_id, judge)
        finally:
            timings.add("svid", self._monotonic() - start)

    async def fetch_x509(self, timings: Timings) -> X509Svid:
        start = self._monotonic()
        try:
            if self._x509 is None:
                raise ValueError("a `source: x509` target wired without an X.509 source")
            return await self._limits.run(SOURCE_SCOPE, self._x509.fetch, self.target.spiffe_id)
        finally:
            timings.add("svid", self._monotonic() - start)

    @property
    def x509(self) -> X509Svids | None:
        """The X.509 source of a `source: x509` target (None for a JWT one)."""
        return self._x509 if self.target.source == "x509" else None

    async def refresh(self, timings: Timings, *, due: float | None = None,
                      reuse_above: float | None = None,
                      ) -> tuple[Credential, JwtSvid | X509Svid]:
        """Run the whole chain once; raise a classified BridgeError on failure. `due` is
        when the credential held must be replaced (monotonic; None: none is held).
        `reuse_above`, given only while nothing that may still be handed out is held
        (the scheduler's rule): kept material older
        than a quarter of its life is still started from while it has more than this
        many seconds left (None: only young kept material is)."""
        if self._coalescer is None:
            return await self._refresh(timings, due, reuse_above)
        return await self._coalescer.run(self._key, self.target.name,
                                         lambda: self._refresh(timings, due, reuse_above))

    async def _refresh(self, timings: Timings, due: float | None,
                       reuse_above: float | None) -> tuple[Credential, JwtSvid | X509Svid]:
        try:
            return await self._attempt(timings, due, reuse_above)
        except ExchangeError as exc:
            if not exc.fresh_svid:
                raise
        return await self._attempt(timings, due, reuse_above)

    async def _attempt(self, timings: Timings, due: float | None,
                       reuse_above: float | None) -> tuple[Credential, JwtSvid | X509Svid]:
        kept, self._kept = self._kept, None
        svid: JwtSvid | X509Svid
        material: Material
        now = self._monotonic()
        young = kept is not None and kept.fresh(now)
        if kept is not None and (young or (reuse_above is not None
                                           and kept.left(now) > reuse_above)):
            svid, issued_at, received = kept.svid, kept.issued_at, kept.received
            material, first = kept.material, kept.position
            expiries, deadlines = list(kept.expiries), list(kept.deadlines)
            # Old material: the credential's life, for the policy, starts now.
            life_from = (issued_at, received) if young else (self._now(), now)
        else:
            if self.target.source == "x509":
                svid = await self.fetch_x509(timings)
            else:
                svid = await self.fetch_svid(timings)
            issued_at, received = self._now(), self._monotonic()
            material, first = svid, 0
            life_from = issued_at, received
            expiries, deadlines = [svid.expires_at], [svid.deadline]
        for position, hop in enumerate(self._hops[first:], start=first + 1):
            quota = quota_of(hop)
            if self._budgets is not None:
                waited = await self._budgets.acquire(
                    quota.scope, quota.rate, due=-math.inf if due is None else due)
                timings.add("budget", waited)
            wall, start = self._now(), self._monotonic()
            try:
                material = await self._limits.run(hop.scope, hop.exchange, material)
            except ExchangeError as exc:
                if self._budgets is not None and exc.reason == "throttled":
                    self._budgets.throttled(quota.scope, quota.rate, exc.retry_after)
                if position > 1 and exc.retryable and not exc.fresh_svid:
                    # The hops before it worked: the retry starts here, not from the SVID.
                    self._kept = _Kept(position - 1, material, svid, issued_at, received,
                                       tuple(expiries), tuple(deadlines))
                if len(self._hops) > 1:
                    raise exc.at(position, len(self._hops)) from exc
                raise
            finally:
                timings.add("exchange", self._monotonic() - start)
            # Hops give expiries in this host's terms from when they asked; what is left
            # goes onto the monotonic clock, so no later wall-clock step can stretch it.
            expiries.append(material.expires_at)
            deadlines.append(start + material.expires_at - wall)
        if self._hops:  # the SVID bounds only what is derived from it: the first hop's call
            expiries, deadlines = expiries[1:], deadlines[1:]
        credential = Credential(
            target=self.target.name, issued_at=life_from[0], expires_at=min(expiries),
            svid_expires_at=svid.expires_at, material=material, deadline=min(deadlines),
            received=life_from[1])
        return credential, svid
