"""A daemon running in-process on its own event-loop thread, for tests that talk to what
it serves (gRPC, metadata, files) while driving it (refresh now, stop)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

from bridge.app import daemon as d
from bridge.config import Config, load_config
from bridge.model import TargetStatus

T = TypeVar("T")


class RunningBridge:
    def __init__(self, config_path: Path, **build: Any) -> None:
        self.config: Config = load_config(config_path)
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="bridge-loop",
                                        daemon=True)
        self._thread.start()
        self.daemon: d.Daemon = self.call(self._build(build))
        self._stop = self.call(self._event())
        self._task = asyncio.run_coroutine_threadsafe(d.serve(self.daemon, self._stop),
                                                      self.loop)

    async def _build(self, build: dict[str, Any]) -> d.Daemon:
        d.use_worker_threads(self.config)
        return d.build(self.config, **build)

    @staticmethod
    async def _event() -> asyncio.Event:
        return asyncio.Event()

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def refresh_all(self) -> list[TargetStatus]:
        """A real refresh of every target, as the scheduler would run it."""
        return self.call(self.daemon.scheduler.refresh_all_once())

    def wait_delivered(self, *names: str, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        wanted = names or tuple(t.name for t in self.config.targets)
        while time.monotonic() < deadline:
            snap = self.daemon.store.snapshot()
            if all(snap[n].delivered for n in wanted):
                return
            if self._task.done():
                self._task.result()
            time.sleep(0.02)
        raise AssertionError(f"targets {wanted} not delivered within {timeout}s")

    def close(self) -> None:
        """Stop the daemon (SIGTERM's path) and the loop; idempotent. A daemon that
        already failed has reported it through `wait_delivered`."""
        if self.loop.is_closed():
            return
        if not self._task.done():
            self.loop.call_soon_threadsafe(self._stop.set)
        try:
            self._task.exception(30)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)
            self.loop.close()


StartBridge = Callable[..., RunningBridge]  # the gRPC tests' `start_bridge` fixture
