"""Waiting for something in a test: one bounded poll, used everywhere."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(check: Callable[[], T | None], what: str, *, timeout: float = 20.0,
             interval: float = 0.05, tolerate: tuple[type[BaseException], ...] = (),
             fatal: tuple[type[BaseException], ...] = (),
             detail: Callable[[], str] | None = None) -> T:
    """Poll `check` until it returns something truthy and return that, at most `timeout`
    seconds, else AssertionError naming `what` (and `detail()`, e.g. a log tail).

    Exceptions of `tolerate` count as "not yet" (the last is reported on timeout), except
    those of `fatal`, which end the wait at once (a process that exited).
    """
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while True:
        try:
            result = check()
        except fatal:
            raise
        except tolerate as exc:
            last, result = exc, None
        if result:
            return result
        if time.monotonic() >= deadline:
            why = f" (last error: {last!r})" if last is not None else ""
            more = f"; {detail()}" if detail is not None else ""
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}{why}{more}")
        time.sleep(interval)
