"""Host clock steps: when this host's wall clock jumps, re-date what we hand out.

Validity is judged on the monotonic clock, so a step never stretches a credential's
life. But the expiries we *write* (files, gRPC, metadata) are in this host's wall-clock
terms, because the SDKs on this host compare them with that clock: after a step they
must move with it, or an SDK would keep a credential past its real end (clock stepped
back) or drop a good one (stepped forward). The watcher compares wall minus monotonic
once a second; a change beyond `THRESHOLD` is a step.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

log = logging.getLogger(__name__)
PERIOD = 1.0      # seconds between looks
THRESHOLD = 1.0   # seconds of change in (wall - monotonic) that count as a step
WARN_EVERY = 60.0  # at most one warning a minute (a clock running fast steps each look)


class StepWatcher:
    """Tells how far the wall clock moved against the monotonic one since the last look."""

    def __init__(self, wall: Callable[[], float], monotonic: Callable[[], float]) -> None:
        self._wall = wall
        self._monotonic = monotonic
        self._offset = wall() - monotonic()
        self._warned_at: float | None = None

    def step(self) -> float | None:
        """Seconds the wall clock jumped since the last call (None: no step)."""
        mono = self._monotonic()
        offset = self._wall() - mono
        delta = offset - self._offset
        if abs(delta) <= THRESHOLD:
            return None
        self._offset = offset
        if self._warned_at is None or mono - self._warned_at >= WARN_EVERY:
            self._warned_at = mono
            log.warning("this host's clock stepped %+.0fs: expiries written for SDKs are "
                        "re-dated to it (validity never depended on it); if this repeats, "
                        "fix NTP", delta)
        return delta
