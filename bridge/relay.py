"""A byte relay on a unix socket, run by its own event loop in one daemon thread.

grpcio's Python API cannot do two things the broker work needs: verify a peer by its
SPIFFE ID (its TLS checks host names), and tell a servicer the `SO_PEERCRED` of a
unix-socket caller. Both are solved by an in-process hop in front of a gRPC channel or
server: the relay accepts on a unix socket, an `Upstream` callback looks at the
accepted socket (peer credentials) and opens the other side (TLS with our own
verification, or a loopback connection whose port names the caller), and the relay
copies bytes both ways until either side closes. One asyncio loop, no thread per
connection, so an SSL object is only ever touched by one thread. The relay may also
accept on a listening socket made elsewhere (one systemd passed: `listening`), which it
serves but never unlinks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)
_CHUNK = 64 * 1024
MAX_CONNECTIONS = 1024  # open relayed connections at most (each holds 2-3 fds)


@dataclass(slots=True)
class Opened:
    """The other side of one relayed connection, and what to do when it ends."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    closed: Callable[[], None] = lambda: None


Upstream = Callable[[socket.socket], Awaitable[Opened | None]]


class UnixRelay:
    """Accepts on `path` (created with `mode`), or on `listening` when given, and relays
    each connection to `upstream`."""

    def __init__(self, path: str, *, upstream: Upstream, mode: int = 0o600,
                 name: str = "relay", backlog: int = 128,
                 max_connections: int = MAX_CONNECTIONS,
                 listening: socket.socket | None = None) -> None:
        self.path = path
        self._listening = listening
        self._upstream = upstream
        self._mode = mode
        self._name = name
        self._backlog = backlog
        self._max_connections = max_connections
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.AbstractServer | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._inode: int | None = None

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        return self._loop

    def start(self, timeout: float = 10.0) -> None:
        """Bind and serve; returns once the socket accepts. Raises OSError."""
        self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise OSError(f"{self._name}: did not start within {timeout:.0f}s")
        if self._error is not None:
            raise self._error

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        with contextlib.suppress(RuntimeError):  # already closed
            loop.call_soon_threadsafe(self._shutdown)
        thread.join(timeout=10)
        self._loop = self._thread = None
        with contextlib.suppress(OSError):  # only ours: a successor may have bound anew
            if self._inode is not None and os.lstat(self.path).st_ino == self._inode:
                os.unlink(self.path)

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._bind())
        except BaseException as exc:  # reported to start()
            self._error = exc
            self._ready.set()
            loop.close()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(self._drain())
            loop.close()

    async def _bind(self) -> None:
        if self._listening is not None:
            self._server = await asyncio.start_server(self._accepted, sock=self._listening)
            return
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            # umask-free: create, then narrow before listen(), so nobody connects early
            sock.bind(self.path)
            os.chmod(self.path, self._mode)
            self._inode = os.lstat(self.path).st_ino
            sock.listen(self._backlog)
        except BaseException:
            sock.close()
            raise
        self._server = await asyncio.start_unix_server(self._accepted, sock=sock)

    def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        assert self._loop is not None
        self._loop.stop()

    async def _drain(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _accepted(self, reader: asyncio.StreamReader,
                        writer: asyncio.StreamWriter) -> None:
        if len(self._tasks) >= self._max_connections:  # each holds fds: bounded
            log.warning("%s: %d connections open already; refused one", self._name,
                        self._max_connections)
            _close(writer)
            return
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        opened: Opened | None = None
        try:
            sock = writer.get_extra_info("socket")
            try:
                opened = await self._upstream(sock)
            except (OSError, ValueError) as exc:
                log.warning("%s: could not open the other side: %s", self._name, exc)
            if opened is None:
                return
            await _pump_both(reader, writer, opened.reader, opened.writer)
        except asyncio.CancelledError:
            pass
        finally:
            if opened is not None:
                opened.closed()
                _close(opened.writer)
            _close(writer)
            if task is not None:
                self._tasks.discard(task)


async def _pump_both(r1: asyncio.StreamReader, w1: asyncio.StreamWriter,
                     r2: asyncio.StreamReader, w2: asyncio.StreamWriter) -> None:
    """Copy both ways; when either direction ends, end both (gRPC never half-closes)."""
    one = asyncio.ensure_future(_pump(r1, w2))
    two = asyncio.ensure_future(_pump(r2, w1))
    try:
        await asyncio.wait({one, two}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        one.cancel()
        two.cancel()
        await asyncio.gather(one, two, return_exceptions=True)


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError, ConnectionError):
        while data := await reader.read(_CHUNK):
            writer.write(data)
            await writer.drain()


def _close(writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(Exception):
        writer.close()
