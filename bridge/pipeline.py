"""One target's refresh: JWT-SVID -> hop(s) -> Credential, with per-stage timings.

A fresh JWT-SVID is fetched for every exchange (the agent caches; we must not). When
STS says the token itself was the problem (invalid, expired, claim rejected) the
exchange is tried once more at once with a newly fetched SVID, as the STS docs advise.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

from bridge.config import TargetConfig
from bridge.errors import ExchangeError
from bridge.exchangers import WebIdentityHop
from bridge.model import Credential, JwtSvid
from bridge.sources import SvidSource


@dataclass
class Timings:
    """Seconds spent per stage in one refresh (`svid`, `exchange`)."""

    stages: dict[str, float] = field(default_factory=dict)

    def add(self, stage: str, seconds: float) -> None:
        self.stages[stage] = self.stages.get(stage, 0.0) + seconds


class TargetPipeline:
    def __init__(self, target: TargetConfig, *, source: SvidSource, hop: WebIdentityHop,
                 monotonic: Callable[[], float], now: Callable[[], float]) -> None:
        self.target = target
        self._source = source
        self._hop = hop
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
        start = self._monotonic()
        try:
            aws = await asyncio.to_thread(self._hop.exchange, svid)
        finally:
            timings.add("exchange", self._monotonic() - start)
        credential = Credential(target=self.target.name, aws=aws, issued_at=issued_at,
                                expires_at=aws.expires_at, svid_expires_at=svid.expires_at)
        return credential, svid
