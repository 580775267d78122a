"""Drives the file output from the store: coalesced, newest-only, retried, expiry-aware.

Store changes only set a flag; one task writes the newest snapshot whenever the flag is
set, so a burst of refreshes costs one pass (and after each pass it pauses as long as
the pass took, at most 0.25 s, so a long burst is written in fewer, larger passes). A
failed pass (disk full, read-only) keeps the previous files and is retried after 1-3 s
with whatever is newest then (after a minute of failing, every 20-30 s). The task also
wakes at the earliest expiry it has written, to remove that file on time, also between
retries.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable, Iterable, Mapping

from bridge.clock import Clock
from bridge.metrics import Metrics
from bridge.model import TargetStatus
from bridge.outputs.directory import CredentialDirectory, OutputFailure

log = logging.getLogger(__name__)
RETRY = (1.0, 3.0)  # seconds before retrying a failed pass
LONG_FAILURE = 60.0  # after failing this long (a disk full for good), retry less often:
LONG_RETRY = (20.0, 30.0)  # each retry logs, and a pass per 2 s for hours helps nobody
MAX_PAUSE = 0.25  # seconds between passes at most (a pause as long as the pass before)


class OutputWriter:
    """Keeps the credential directory in step with the store (see the module docstring)."""

    def __init__(self, directory: CredentialDirectory, *,
                 snapshot: Callable[[], Mapping[str, TargetStatus]], clock: Clock,
                 metrics: Metrics, targets: Iterable[str] = (),
                 rng: random.Random | None = None) -> None:
        self._directory = directory
        self._targets = frozenset(targets)
        self._behind_now: frozenset[str] = frozenset()
        self._gauges_set = False  # outputs_behind of every target, by the first pass
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
        failing_since: float | None = None
        while True:
            timeout = self._until_next_expiry()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):  # not wait_for: see Scheduler.refresh
                    await self._dirty.wait()
            self._dirty.clear()
            started = self._clock.monotonic()
            if not await self.flush():
                failing_since = None
                # Passes ran back to back while 1,000 targets came in, each O(targets):
                # a pause as long as the pass keeps them to half the writer's time, and
                # the next pass carries every refresh of the pause.
                took = min(self._clock.monotonic() - started, MAX_PAUSE)
                until = self._until_next_expiry()
                if took > 0:
                    await self._clock.sleep(took if until is None else min(took, until))
                continue
            now = self._clock.monotonic()
            failing_since = now if failing_since is None else failing_since
            delay = self._rng.uniform(*(LONG_RETRY if now - failing_since >= LONG_FAILURE
                                        else RETRY))
            # Never past the next expiry: that file must still go on time.
            until = self._until_next_expiry()
            await self._clock.sleep(delay if until is None else min(delay, until))
            self._dirty.set()

    async def flush(self) -> list[OutputFailure]:
        """Write the newest snapshot now; return the failures (already counted and logged)."""
        statuses = self._snapshot()
        failures = await asyncio.to_thread(self._directory.apply, statuses,
                                           self._clock.monotonic())
        self._behind(failures)
        for f in failures:
            self._metrics.output_write_failures.labels(f.output).inc()
            log.error("writing %s output failed (%s): %s; previous file kept, will retry",
                      f.output, f.error.reason, f.error.detail)
        return failures

    @property
    def behind(self) -> frozenset[str]:
        """Targets whose files the last pass could not bring up to date."""
        return self._behind_now

    def _behind(self, failures: list[OutputFailure]) -> None:
        behind: set[str] = set()
        for f in failures:
            behind |= f.targets or self._targets
        now = frozenset(behind)
        # Every gauge on the first pass, then only those that changed: at 1,000 targets,
        # setting each on every pass of a cold fill was 5 % of the daemon's CPU.
        changed = now ^ self._behind_now if self._gauges_set else self._targets
        self._behind_now, self._gauges_set = now, True
        for target in changed & self._targets:
            self._metrics.outputs_behind.labels(target).set(1 if target in now else 0)

    def _until_next_expiry(self) -> float | None:
        """Seconds to the earliest deadline of a credential in the store or of what is on
        disk (the latter matters while writes fail: its file must go on time)."""
        now = self._clock.monotonic()
        times = [self._directory.next_deadline(now) or float("inf")]
        for s in self._snapshot().values():
            if s.credential is not None:
                times.append(s.credential.deadline)
            if s.svid is not None:
                times.append(s.svid.deadline)
        future = [t - now for t in times if now < t < float("inf")]
        return max(0.05, min(future) + 0.01) if future else None

