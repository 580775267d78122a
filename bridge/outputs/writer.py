"""Drives the file output from the store: coalesced, newest-only, retried, expiry-aware.

Store changes only set a flag; one task writes the newest snapshot whenever the flag is
set, so a burst of refreshes costs one pass, and a failed pass (disk full, read-only)
keeps the previous files and is retried after 1-3 s with whatever is newest then. The
task also wakes at the earliest expiry it has written, to remove that file on time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable, Mapping

from bridge.clock import Clock
from bridge.metrics import Metrics
from bridge.model import TargetStatus
from bridge.outputs.directory import CredentialDirectory, OutputFailure

log = logging.getLogger(__name__)


class OutputWriter:
    """Keeps the credential directory in step with the store (see the module docstring)."""

    def __init__(self, directory: CredentialDirectory, *,
                 snapshot: Callable[[], Mapping[str, TargetStatus]], clock: Clock,
                 metrics: Metrics, rng: random.Random | None = None) -> None:
        self._directory = directory
        self._snapshot = snapshot
        self._clock = clock
        self._metrics = metrics
        self._rng = rng or random.Random()  # noqa: S311 - jitter only
        self._dirty = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None

    def notify(self, _name: str = "", _status: TargetStatus | None = None) -> None:
        """Store listener: safe to call from any thread."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._dirty.set)

    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._dirty.set()
        while True:
            timeout = self._until_next_expiry()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):  # not wait_for: see Scheduler.refresh
                    await self._dirty.wait()
            self._dirty.clear()
            if await self.flush():
                await self._clock.sleep(self._rng.uniform(1.0, 3.0))
                self._dirty.set()

    async def flush(self) -> list[OutputFailure]:
        """Write the newest snapshot now; return the failures (already counted and logged)."""
        statuses = self._snapshot()
        failures = await asyncio.to_thread(self._directory.apply, statuses, self._clock.time())
        for f in failures:
            self._metrics.output_write_failures.labels(f.output).inc()
            log.error("writing %s output failed (%s): %s; previous file kept, will retry",
                      f.output, f.error.reason, f.error.detail)
        return failures

    def _until_next_expiry(self) -> float | None:
        now = self._clock.time()
        times = []
        for s in self._snapshot().values():
            if s.credential is not None:
                times.append(s.credential.expires_at)
            if s.svid is not None:
                times.append(s.svid.expires_at)
        future = [t - now for t in times if t > now]
        return max(0.05, min(future) + 0.01) if future else None

