"""Time as a collaborator: wall time for expiries, monotonic time for waiting.

The refresh loop takes a `Clock`, so tests can run hours of schedule in milliseconds
and skew the wall clock without touching the machine's.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol


class Clock(Protocol):
    def time(self) -> float:
        """Wall-clock UTC epoch seconds (comparable to credential expiries)."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never jumps, for scheduling."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait, cancellably."""
        ...


class SystemClock:
    """The real clocks."""

    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))
