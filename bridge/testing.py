"""Test helpers shipped with the package (like structlog.testing): a virtual clock.

`FakeClock` implements `bridge.clock.Clock`; its `sleep` parks the caller until a test
calls `advance`, so hours of refresh schedule run in milliseconds, in a known order.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools


class FakeClock:
    def __init__(self, start: float = 1_900_000_000.0) -> None:
        self._wall = start
        self._mono = 0.0
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()
        self.sleeps: list[float] = []

    def time(self) -> float:
        return self._wall

    def monotonic(self) -> float:
        return self._mono

    def skew(self, seconds: float) -> None:
        """Jump the wall clock only (NTP step, bad RTC); monotonic time is unaffected."""
        self._wall += seconds

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._mono + max(0.0, seconds), next(self._seq), future))
        await future

    async def settle(self) -> None:
        """Let every runnable task run (including worker threads finishing)."""
        for _ in range(15):
            await asyncio.sleep(0.001)

    async def advance(self, seconds: float) -> None:
        """Move both clocks forward, waking sleepers in order of their wake time."""
        target = self._mono + seconds
        await self.settle()
        while self._sleepers and self._sleepers[0][0] <= target:
            wake, _, future = heapq.heappop(self._sleepers)
            self._wall += wake - self._mono
            self._mono = wake
            if not future.done():
                future.set_result(None)
            await self.settle()
        self._wall += target - self._mono
        self._mono = target
        await self.settle()
