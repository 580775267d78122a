"""Loaded only into a daemon run under libfaketime by the tests (PYTHONPATH).

Debian's libfaketime 0.9.10 breaks `clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME)`
with FAKETIME_DONT_FAKE_MONOTONIC=1: CPython's `time.sleep` then fails with EINVAL
(libraries sleep in their retry loops). A condition wait on the monotonic clock works
under it, so `time.sleep` waits on one. The daemon's own code is unchanged.
"""

import threading
import time


def _sleep(seconds: float) -> None:
    if seconds < 0:
        raise ValueError("sleep length must be non-negative")
    threading.Event().wait(seconds)


time.sleep = _sleep
