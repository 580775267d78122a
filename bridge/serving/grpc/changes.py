"""Change signals from the store (any thread) to watchers (the server's event loop).

Each target has an event that is set and replaced on every change, so a watcher that
takes the event before reading the store can never miss an update; a burst of changes
coalesces into one wake-up that reads the newest value.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable

from bridge.model import TargetStatus


class Changes:
    def __init__(self, loop: asyncio.AbstractEventLoop, names: Iterable[str],
                 on_change: Callable[[], None] | None = None) -> None:
        self._loop = loop
        self._events = {n: asyncio.Event() for n in names}
        self._on_change = on_change or (lambda: None)
        self.closed = False

    def notify(self, name: str, _status: TargetStatus) -> None:
        """A store listener: safe to call from any thread, a no-op once the loop is gone."""
        with contextlib.suppress(RuntimeError):  # the loop has closed: nobody watches
            self._loop.call_soon_threadsafe(self._fire, name)

    def event(self, name: str) -> asyncio.Event:
        return self._events[name]

    def track(self, names: Iterable[str]) -> None:
        """Follow exactly `names` from now on (a reload): watchers of a name dropped are
        woken, and find their target gone. Call on the server's loop."""
        wanted = set(names)
        for gone in [n for n in self._events if n not in wanted]:
            self._fire(gone)
            del self._events[gone]
        for name in wanted:
            self._events.setdefault(name, asyncio.Event())

    def close(self) -> None:
        """Wake every watcher so streams end now instead of at the shutdown grace."""
        self.closed = True
        for name in list(self._events):
            self._fire(name)

    def _fire(self, name: str) -> None:
        event = self._events.get(name)
        if event is None:
            return
        self._events[name] = asyncio.Event()
        event.set()
        self._on_change()
