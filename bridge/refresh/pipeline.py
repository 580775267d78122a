"""One target's refresh: JWT-SVID -> hop -> hop ... -> Credential, with stage timings.

A fresh JWT-SVID is fetched for every exchange (the agent caches; we must not). When a
token service says the token itself was the problem (invalid, expired, claim rejected)
the whole chain is tried once more at once with a newly fetched SVID. The credential's
expiry is the earliest expiry among the hops' outputs: nothing outlives a link it was
derived from.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from bridge.clouds import Hop
from bridge.config import TargetConfig
from bridge.errors import ExchangeError
from bridge.model import Credential, JwtSvid, Material
from bridge.sources import SvidSource


@dataclass
class Timings:
    """Seconds spent per stage in one refresh (`svid`, `exchange`, ...)."""

    stages: dict[str, float] = field(default_factory=dict)

    def add(self, stage: str, seconds: float) -> None:
        self.stages[stage] = self.stages.get(stage, 0.0) + seconds


class TargetPipeline:
    """One target's chain: a fresh JWT-SVID, then each hop in turn."""

    def __init__(self, target: TargetConfig, *, source: SvidSource, hops: Sequence[Hop],
                 monotonic: Callable[[], float], now: Callable[[], float]) -> None:
        self.target = target
        self._source = source
        self._hops = list(hops)
        self._monotonic = monotonic
        self._now = now

    async def fetch_svid(self, timings: Timings) -> JwtSvid:
        start = self._monotonic()
        try:
            return await asyncio.to_thread(
                self._source.fetch, self.target.audience, self.target.spiffe_id)
        finally:
            timings.add("svid", self._monotonic() - start)

    async def refresh(self, timings: Timings) -> tuple[Credential, JwtSvid]:
        """Run the whole chain once; raise a classified BridgeError on failure."""
        try:
            return await self._attempt(timings)
        except ExchangeError as exc:
            if not exc.fresh_svid:
                raise
        return await self._attempt(timings)

    async def _attempt(self, timings: Timings) -> tuple[Credential, JwtSvid]:
        svid = await self.fetch_svid(timings)
        issued_at = self._now()
        material: Material = svid
        expiries: list[float] = []
        for position, hop in enumerate(self._hops, start=1):
            start = self._monotonic()
            try:
                material = await asyncio.to_thread(hop.exchange, material)
            except ExchangeError as exc:
                if len(self._hops) > 1:
                    raise exc.at(position, len(self._hops)) from exc
                raise
            finally:
                timings.add("exchange", self._monotonic() - start)
            expiries.append(material.expires_at)
        credential = Credential(
            target=self.target.name, issued_at=issued_at,
            expires_at=min(expiries) if expiries else svid.expires_at,
            svid_expires_at=svid.expires_at, material=material)
        return credential, svid
