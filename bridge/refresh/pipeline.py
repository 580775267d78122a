"""One target's refresh: JWT-SVID -> hop -> hop ... -> Credential, with stage timings.

A fresh JWT-SVID is fetched for every exchange (the agent caches; we must not). When a
token service says the token itself was the problem (invalid, expired, claim rejected)
the whole chain is tried once more at once with a newly fetched SVID. The credential's
expiry is the earliest expiry among the hops' outputs: nothing outlives a link it was
derived from.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from bridge.clouds import Hop
from bridge.config import TargetConfig
from bridge.errors import ExchangeError
from bridge.model import Credential, JwtSvid, Material
from bridge.refresh.limits import Limits
from bridge.sources import SvidSource, X509Svids
from bridge.x509_svid import X509Svid

SOURCE_SCOPE = "workload_api"


@dataclass
class Timings:
    """Seconds spent per stage in one refresh (`svid`, `exchange`, ...)."""

    stages: dict[str, float] = field(default_factory=dict)

    def add(self, stage: str, seconds: float) -> None:
        self.stages[stage] = self.stages.get(stage, 0.0) + seconds


class TargetPipeline:
    """One target's chain: a fresh JWT-SVID, then each hop in turn."""

    def __init__(self, target: TargetConfig, *, source: SvidSource, hops: Sequence[Hop],
                 monotonic: Callable[[], float], now: Callable[[], float],
                 limits: Limits | None = None, x509: X509Svids | None = None) -> None:
        self.target = target
        self._source = source
        self._x509 = x509  # for a `source: x509` target
        self._hops = list(hops)
        self._monotonic = monotonic
        self._now = now
        self._limits = limits or Limits(32)  # the daemon shares one across its targets

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

    async def refresh(self, timings: Timings) -> tuple[Credential, JwtSvid | X509Svid]:
        """Run the whole chain once; raise a classified BridgeError on failure."""
        try:
            return await self._attempt(timings)
        except ExchangeError as exc:
            if not exc.fresh_svid:
                raise
        return await self._attempt(timings)

    async def _attempt(self, timings: Timings) -> tuple[Credential, JwtSvid | X509Svid]:
        svid: JwtSvid | X509Svid
        if self.target.source == "x509":
            svid = await self.fetch_x509(timings)
        else:
            svid = await self.fetch_svid(timings)
        issued_at, received = self._now(), self._monotonic()
        material: Material = svid
        expiries, deadlines = [svid.expires_at], [svid.deadline]
        for position, hop in enumerate(self._hops, start=1):
            wall, start = self._now(), self._monotonic()
            try:
                material = await self._limits.run(hop.scope, hop.exchange, material)
            except ExchangeError as exc:
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
            target=self.target.name, issued_at=issued_at, expires_at=min(expiries),
            svid_expires_at=svid.expires_at, material=material, deadline=min(deadlines),
            received=received)
        return credential, svid
