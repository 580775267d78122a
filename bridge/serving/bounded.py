"""A small HTTP/1.1 server that a slow or idle client cannot starve: the base of the
metadata listeners and of the /metrics /healthz /readyz server.

- **Bounded threads.** At most `max_connections` connections are served at once, one
  thread each. When all are taken, the oldest connection that is not in the middle of a
  request is cut to make room: one that has sent nothing or only part of a head (a
  slowloris), or a keep-alive one idle for more than `KEEPALIVE_GRACE`. Only when every
  connection is busy is the newcomer answered 503 and closed, without a thread.
- **A deadline for the whole head.** A request's head must arrive within `header_timeout`
  of its first byte (of the accept, for a new connection), however it trickles in: a
  per-read timeout would let one byte every few seconds hold a connection for ever.
  Late heads get 408 and the connection is closed.
- **Strict parsing** (`bridge.serving.http1`): a malformed head is a 4xx and a close.
- **One write per reply** (status line, headers, body in one `send`), TCP_NODELAY.
- **Quiet.** Nothing a caller sent is logged or echoed: headers carry tokens.

Subclasses implement `respond(request, peer) -> Reply` and may count what happens
(`counted`, `dropped`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import selectors
import socket
import threading
import time
from dataclasses import dataclass, field
from email.utils import formatdate
from http import HTTPStatus

from bridge.serving import activation
from bridge.serving.http1 import MAX_HEAD, HeadError, Reply, Request, head_end, parse_head

log = logging.getLogger(__name__)

MAX_CONNECTIONS = 128
IDLE_TIMEOUT = 10.0
HEADER_TIMEOUT = 3.0
KEEPALIVE_GRACE = 1.0  # a keep-alive client between two requests is not cut before this
_PHRASES = {s.value: s.phrase for s in HTTPStatus}
_NEW, _HEAD, _BUSY, _IDLE = "new", "head", "busy", "idle"


@dataclass(eq=False, slots=True)
class Peer:
    """One accepted connection: its state (for eviction) and what a subclass caches
    about it (the owning uid)."""

    sock: socket.socket
    address: tuple[object, ...]
    state: str = _NEW
    since: float = field(default_factory=time.monotonic)
    evicted: bool = False
    uid: int | None = None
    uid_known: bool = False


class BoundedServer:
    """A listener (a `daemon.Service` underneath): `start()` binds, `stop()` closes
    the listener and cuts every open connection, so nothing is served after it."""

    name: str = "http"  # thread names and log lines

    def __init__(self, host: str, port: int, *, max_connections: int = MAX_CONNECTIONS,
                 idle_timeout: float = IDLE_TIMEOUT,
                 header_timeout: float = HEADER_TIMEOUT) -> None:
        self._bind_host = host
        self._bind_port = port
        self._family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.max_connections = max_connections
        self.idle_timeout = idle_timeout
        self.header_timeout = header_timeout
        self._listener: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._slots = threading.BoundedSemaphore(max_connections)
        self._lock = threading.Lock()
        self._open: dict[socket.socket, Peer] = {}
        self._wake: tuple[int, int] | None = None
        self._date = (0, "")

    # -- hooks -----------------------------------------------------------------------------

    def respond(self, request: Request, peer: Peer) -> Reply:
        raise NotImplementedError

    def reply_headers(self) -> tuple[tuple[str, str], ...]:
        """Headers sent on every reply of this listener, refusals included."""
        return ()

    def counted(self, reply: Reply) -> None:
        """A reply is about to be sent (before the write: a client that saw it sees it
        counted)."""

    def dropped(self, reason: str) -> None:
        """A connection was cut without a reply (`evicted` to make room)."""

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def bound_address(self) -> tuple[str, int] | None:
        if self._listener is None:
            return None
        bound = self._listener.getsockname()
        if not isinstance(bound, tuple):
            return None  # a unix socket
        return str(bound[0]), int(bound[1])

    def listen(self) -> None:
        """Bind and listen (raises OSError); `serve()` starts answering. A socket systemd
        passed for this address (socket activation) is adopted instead of binding."""
        passed = activation.take(self._bind_host, self._bind_port)
        if passed is not None:
            self.use_listener(passed)
            return
        sock = socket.socket(self._family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self._bind_host, self._bind_port))
            sock.listen(1024)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        self.use_listener(sock)

    def use_listener(self, sock: socket.socket) -> None:
        """Serve on `sock`, a listening socket (non-blocking) made elsewhere: a unix one."""
        self._listener = sock
        self._wake = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)

    def serve(self) -> None:
        self._thread = threading.Thread(target=self._accept_loop, name=f"{self.name}-accept",
                                        daemon=True)
        self._thread.start()

    def close(self) -> None:
        listener, self._listener = self._listener, None
        if listener is None:
            return
        wake = self._wake
        if wake is not None:
            with contextlib.suppress(OSError):
                os.write(wake[1], b"x")
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        listener.close()
        if wake is not None:
            for fd in wake:
                with contextlib.suppress(OSError):
                    os.close(fd)
            self._wake = None
        with self._lock:
            open_now = list(self._open)
        for sock in open_now:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    @property
    def open_connections(self) -> int:
        with self._lock:
            return len(self._open)

    # -- accepting -------------------------------------------------------------------------

    def _accept_loop(self) -> None:
        """Sleeps until a connection or the wake pipe: an idle listener costs nothing."""
        listener, wake = self._listener, self._wake
        assert listener is not None
        assert wake is not None
        with selectors.DefaultSelector() as selector:
            selector.register(listener, selectors.EVENT_READ)
            selector.register(wake[0], selectors.EVENT_READ)
            while True:
                for key, _ in selector.select():
                    if key.fileobj == wake[0]:
                        return
                    self._accept_ready(listener)

    def _accept_ready(self, listener: socket.socket) -> None:
        for _ in range(64):  # drain a burst, then let the selector see the wake pipe
            try:
                sock, address = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # out of descriptors: back off rather than spin on a ready
                time.sleep(0.05)  # listener; the backlog waits for a free one
                return
            self._admit(sock, address)

    def _admit(self, sock: socket.socket, address: tuple[object, ...]) -> None:
        if not self._slots.acquire(blocking=False) and not self._make_room():
            self._busy(sock)
            return
        sock.setblocking(True)
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        peer = Peer(sock, address)
        with self._lock:
            self._open[sock] = peer
        try:
            threading.Thread(target=self._connection, args=(peer,), name=f"{self.name}-conn",
                             daemon=True).start()
        except RuntimeError as exc:  # no thread (a pids limit): this connection only
            log.warning("%s cannot start a connection thread: %s", self.name, exc)
            self._forget(peer)

    def _make_room(self) -> bool:
        """Cut the oldest connection that is not serving a request, and take its slot."""
        now = time.monotonic()
        with self._lock:
            victims = [p for p in self._open.values() if not p.evicted and (
                p.state in (_NEW, _HEAD)
                or (p.state == _IDLE and now - p.since >= KEEPALIVE_GRACE))]
            victim = min(victims, key=lambda p: p.since, default=None)
            if victim is not None:
                victim.evicted = True
        if victim is None:
            return False
        self.dropped("evicted")
        with contextlib.suppress(OSError):
            victim.sock.shutdown(socket.SHUT_RDWR)
        return self._slots.acquire(timeout=1.0)

    def _busy(self, sock: socket.socket) -> None:
        """Every slot is serving a request: a canned 503 without a thread, then close."""
        reply = Reply(503, b"busy\n", headers=(("Retry-After", "1"),), refusal="busy")
        self.counted(reply)
        with contextlib.suppress(OSError):
            sock.setblocking(False)
            sock.send(self.render(reply, close=True))
            sock.recv(65536)  # take a request already here, so closing sends FIN, not RST
        sock.close()

    def _forget(self, peer: Peer) -> None:
        with self._lock:
            self._open.pop(peer.sock, None)
        self._slots.release()
        with contextlib.suppress(OSError):
            peer.sock.close()

    # -- one connection --------------------------------------------------------------------

    def _connection(self, peer: Peer) -> None:
        try:
            self._serve_connection(peer)
        except (ConnectionError, TimeoutError, OSError):
            pass  # clients hang up, and evicted ones are cut: not an error
        except Exception as exc:  # a bug costs this connection, never the listener
            log.warning("%s connection failed: %s", self.name, type(exc).__name__)
        finally:
            self._forget(peer)

    def _serve_connection(self, peer: Peer) -> None:
        sock = peer.sock
        buffer = bytearray()
        first = True
        while True:
            head = self._read_head(peer, buffer, first=first)
            first = False
            if head is None:
                return
            try:
                request = parse_head(head)
            except HeadError as exc:
                self._send(peer, Reply(exc.status, f"{_PHRASES.get(exc.status, '')}\n".encode(),
                                       refusal="malformed", close=True), close=True)
                _finish(sock)
                return
            if not self._claim(peer):
                return  # cut to make room just as its head completed
            reply = self._safe_respond(request, peer)
            close = reply.close or not request.keep_alive or request.method == "HEAD"
            self._send(peer, reply, close=close)
            if close or peer.evicted:
                _finish(sock)
                return
            self._set(peer, _IDLE)

    def _read_head(self, peer: Peer, buffer: bytearray, *, first: bool) -> bytes | None:
        """The next head, or None when the connection is done (closed, idle, late: a late
        head has been answered 408)."""
        sock = peer.sock
        # the first head is timed from the accept, a pipelined one from now, and the
        # next one on a keep-alive connection from its first byte
        started = peer.since if first else (time.monotonic() if buffer else None)
        while (end := head_end(buffer)) < 0:
            if len(buffer) > MAX_HEAD:
                self._send(peer, Reply(431, b"Request Header Fields Too Large\n",
                                       refusal="malformed", close=True), close=True)
                _finish(sock)
                return None
            now = time.monotonic()
            if started is None:  # keep-alive: wait for the first byte of the next request
                timeout = self.idle_timeout
            else:
                limit = self.header_timeout if buffer else min(self.header_timeout,
                                                               self.idle_timeout)
                timeout = started + limit - now
                if timeout <= 0:
                    if buffer:
                        self._send(peer, Reply(408, b"Request Timeout\n", refusal="slow",
                                               close=True), close=True)
                        _finish(sock)
                    return None
            sock.settimeout(timeout)
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                if started is None:
                    return None  # idle keep-alive: dropped quietly
                continue  # the head deadline decides above
            if not chunk or peer.evicted:
                return None
            if started is None:
                started = time.monotonic()
            if not buffer and peer.state != _HEAD:
                self._set(peer, _HEAD, since=started)
            buffer += chunk
        head = bytes(buffer[:end])
        del buffer[:end]
        return head

    def _safe_respond(self, request: Request, peer: Peer) -> Reply:
        failed = ""
        try:
            return self.respond(request, peer)
        except Exception as exc:  # a bug must cost one 500, not the connection's thread
            failed = type(exc).__name__  # only the type: a message could quote a header
        log.error("%s request failed: %s", self.name, failed)
        return Reply(500, b"internal error\n", close=True)

    def _claim(self, peer: Peer) -> bool:
        """Mark `peer` busy unless `_make_room` chose it first (one lock decides)."""
        with self._lock:
            if peer.evicted:
                return False
            peer.state, peer.since = _BUSY, time.monotonic()
            return True

    def _set(self, peer: Peer, state: str, *, since: float | None = None) -> None:
        with self._lock:
            peer.state = state
            peer.since = time.monotonic() if since is None else since

    def _send(self, peer: Peer, reply: Reply, *, close: bool) -> None:
        self.counted(reply)
        peer.sock.settimeout(self.idle_timeout)  # a client that never reads cannot hold us
        peer.sock.sendall(self.render(reply, close=close))

    # -- rendering -------------------------------------------------------------------------

    def render(self, reply: Reply, *, close: bool) -> bytes:
        """Status line, headers and body as one buffer (one send)."""
        phrase = _PHRASES.get(reply.status, "")
        extra = "".join(f"{k}: {v}\r\n" for k, v in (*self.reply_headers(), *reply.headers))
        if close:
            extra += "Connection: close\r\n"
        head = (f"HTTP/1.1 {reply.status} {phrase}\r\nServer: spiffe-bridge\r\n"
                f"Date: {self._date_header()}\r\nContent-Type: {reply.content_type}\r\n"
                f"Content-Length: {len(reply.body)}\r\nCache-Control: no-store\r\n{extra}\r\n")
        return head.encode("latin-1") + reply.body

    def _date_header(self) -> str:
        now = int(time.time())
        if self._date[0] != now:
            self._date = (now, formatdate(now, usegmt=True))
        return self._date[1]


def _finish(sock: socket.socket) -> None:
    """End our side after the last reply, and take what the client already sent, so that
    closing sends FIN, not a reset that could destroy the reply before it is read."""
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_WR)
        for _ in range(16):
            if not sock.recv(65536, socket.MSG_DONTWAIT):
                return
