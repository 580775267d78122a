"""Bounded concurrency per remote endpoint ("scope"), so one sick service cannot starve
another.

Each scope (the Workload API, one AWS STS endpoint, one Google STS, ...) gets its own
semaphore of `concurrency` slots and its own thread pool of as many threads: the
blocking SDK calls of a scope that hangs hold only that scope's slots and threads, and
every other scope keeps being called. Pools grow only to what is used at once.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


class Limits:
    """Per-scope slots and threads for the blocking calls of refreshes."""

    def __init__(self, concurrency: int) -> None:
        self._concurrency = concurrency
        self._slots: dict[str, asyncio.Semaphore] = {}
        self._pools: dict[str, concurrent.futures.ThreadPoolExecutor] = {}

    async def run(self, scope: str, call: Callable[..., T], *args: Any) -> T:
        """`call(*args)` in `scope`'s thread pool once one of its slots is free."""
        slots = self._slots.get(scope)
        if slots is None:
            slots = self._slots[scope] = asyncio.Semaphore(self._concurrency)
            self._pools[scope] = concurrent.futures.ThreadPoolExecutor(
                max_workers=self._concurrency, thread_name_prefix=f"io-{scope[:20]}")
        async with slots:
            return await asyncio.get_running_loop().run_in_executor(
                self._pools[scope], call, *args)

    def waiting(self, scope: str) -> int:
        """Calls queued behind the scope's slots (for tests and metrics)."""
        slots = self._slots.get(scope)
        return len(getattr(slots, "_waiters", None) or ()) if slots else 0

    def close(self) -> None:
        """Stop the pools; a call still hanging finishes on its own (its thread is a
        daemon's worker, bounded by the call's own deadline)."""
        for pool in self._pools.values():
            pool.shutdown(wait=False, cancel_futures=True)
