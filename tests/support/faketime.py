"""The daemon on a shifted clock: libfaketime (Debian's `faketime` package) preloaded
into the daemon process only, driven through a timestamp file the test rewrites.

`FAKETIME_DONT_FAKE_MONOTONIC=1`: only the wall clock (`CLOCK_REALTIME`, `time()`) is
faked, as when NTP steps a host's clock or it runs wrong; the monotonic clock stays
real. The emulators, the agent and the checker run in the test process on the real
clock, so "expired" is judged by real time.

`HostClock` keeps the history of what it set, so the checker can tell the daemon's
wall-clock offset at any real moment (within the library's 1 s re-read of the file).
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Mapping
from pathlib import Path

from tests.support.process import start_bridge
from tests.support.require import unavailable

INSTALL = "tests/tools/install-faketime.sh"
LIBRARIES = ("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
             "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1",
             "/usr/lib/faketime/libfaketime.so.1")
SHIM = Path(__file__).resolve().parent / "faketime_shim"
SHM = Path("/dev/shm")
REREAD = 1.0  # seconds: FAKETIME_CACHE_DURATION, how late the daemon sees a change
# Seconds the daemon may take to re-date what it serves after its clock stepped: the
# library's re-read, the daemon's one look a second (bridge.refresh.clock_steps), and
# slack for a loaded machine. Only the "expiry as written" check uses it; whether
# anything really expired is judged on the real clock alone, with no grace.
REDATE_GRACE = REREAD + 1.0 + 3.0


def library() -> str:
    """libfaketime's path; skip without it, but fail under CI=true (the README's rule)."""
    found = next((p for p in LIBRARIES if os.path.exists(p)), None)
    if found is None:
        message = f"libfaketime not found (install: {INSTALL})"
        unavailable(message)
    return found


class HostClock:
    """The daemon's wall clock: `offset` seconds from real time, or running `speed`
    times as fast from the moment it was set."""

    def __init__(self, directory: Path, *, speeds: bool = False) -> None:
        """`speeds`: the clock will be set to run fast (FAKETIME_XRESET, so a speed
        applies from when it is set); off otherwise, keeping offsets plain."""
        self.path = directory / "faketime.rc"
        self._speeds = speeds
        self._pids: list[int] = []
        self._lock = threading.Lock()
        # (real time set, offset at that moment, speed); the daemon sees it <= REREAD later
        self._history: list[tuple[float, float, float]] = []
        self.set(0.0)

    def env(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        env = dict(os.environ if base is None else base)
        if self._speeds:
            env["FAKETIME_XRESET"] = "1"  # a speed applies from when it is set
        env.update({
            "LD_PRELOAD": library(),
            "FAKETIME_TIMESTAMP_FILE": str(self.path),
            "FAKETIME_CACHE_DURATION": str(int(REREAD)),
            "FAKETIME_DONT_FAKE_MONOTONIC": "1",
            "PYTHONPATH": os.pathsep.join(p for p in (str(SHIM), env.get("PYTHONPATH"))
                                          if p),
        })
        return env

    def start(self, *args: str, log: Path) -> subprocess.Popen[str]:
        """`spiffe-bridge ARGS` on this clock (output to `log`)."""
        proc = start_bridge(*args, env=self.env(), log=log)
        self._pids.append(proc.pid)
        return proc

    def close(self) -> None:
        """Remove the shared memory libfaketime made for each process started: it removes
        it only at a normal C-level exit, and the daemon leaves through `os._exit`."""
        for pid in self._pids:
            for name in (f"faketime_shm_{pid}", f"sem.faketime_sem_{pid}"):
                (SHM / name).unlink(missing_ok=True)
        self._pids.clear()

    def set(self, offset: float, *, speed: float = 1.0) -> None:
        """Shift the daemon's clock to real time + `offset` seconds, running at `speed`."""
        if speed != 1.0 and not self._speeds:
            raise ValueError("HostClock(speeds=True) to set a speed")
        spec = f"{offset:+.0f}" + (f" x{speed:g}" if speed != 1.0 else "")
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(spec + "\n")
        os.replace(tmp, self.path)  # the library never reads half a line
        with self._lock:
            self._history.append((time.time(), offset, speed))

    def offsets(self, at: float, window: float = REDATE_GRACE) -> tuple[float, float]:
        """The lowest and highest offset the daemon's clock may have had from `at -
        window` to `at` (real times): what it serves then is dated by one of them."""
        with self._lock:
            history = list(self._history)
        values = [_offset_at(history, t) for t in (at - window, at - REREAD, at)]
        values += [o for (t, o, _s) in history if at - window <= t <= at]
        return min(values), max(values)


def _offset_at(history: list[tuple[float, float, float]], at: float) -> float:
    current = (0.0, 0.0, 1.0)
    for entry in history:
        if entry[0] <= at:
            current = entry
    since, offset, speed = current
    return offset + (speed - 1.0) * max(0.0, at - since)

