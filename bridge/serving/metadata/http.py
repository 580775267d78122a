"""The loopback HTTP/1.1 server under every metadata emulator.

What each emulator gets without writing it again:

- **Loopback callers only, and no rebinding.** The listener is bound to a loopback
  address (config enforces it). A `Host` that is not a loopback literal or `localhost`
  with this listener's port is refused, so a web page whose DNS name resolves to
  127.0.0.1 cannot read credentials (aws-vault#578). A request carrying
  `X-Forwarded-For` or `Forwarded` came through a proxy and is refused, as real IMDS
  and rolesanywhere `serve` do.
- **Bounded.** At most `max_connections` connections are served at once, one thread
  each; one more is answered 503 and closed at once instead of queueing a thread.
  Idle keep-alive connections are dropped after `idle_timeout`, and `stop()` cuts the
  open ones so nothing is served after it returns.
- **Quiet.** No request is logged: headers carry tokens. Request bodies are refused.
- **One write per reply** (status line, headers and body in one `send`), with
  TCP_NODELAY, so keep-alive clients never wait on Nagle and delayed ACKs.

Subclasses implement `handle(request) -> Reply`, and may refuse earlier in `precheck`
(GCE's `Metadata-Flavor`) and add headers to every reply (`reply_headers`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import selectors
import socket
import sys
import threading
import time
from email.utils import formatdate
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

from bridge.metrics import Metrics
from bridge.serving.metadata.messages import Reply, Request, host_allowed, text

log = logging.getLogger(__name__)

MAX_CONNECTIONS = 128
IDLE_TIMEOUT = 10.0
_PHRASES = {s.value: s.phrase for s in HTTPStatus}


class LoopbackServer:
    """A metadata listener (a `daemon.Service`): binds at `start()`, not before, so
    building a daemon for `once` never takes the port."""

    endpoint: ClassVar[str] = "metadata"  # metric label and log name
    methods: ClassVar[tuple[str, ...]] = ("GET",)

    def __init__(self, address: str, *, metrics: Metrics | None = None,
                 max_connections: int = MAX_CONNECTIONS,
                 idle_timeout: float = IDLE_TIMEOUT) -> None:
        host, _, port = address.rpartition(":")
        self._host = host.strip("[]")
        self._configured_port = self._port = int(port)
        self._family = socket.AF_INET6 if ":" in self._host else socket.AF_INET
        self._metrics = metrics
        self._max_connections = max_connections
        self._idle_timeout = idle_timeout
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._counters: dict[tuple[str, str], Any] = {}
        self._hosts: set[str] = set()  # Host values already accepted (bounded)
        self._date = (0, "")

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def address(self) -> str:
        """`host:port` as bound (the configured one before `start()`)."""
        server = self._server
        bound = self._host if server is None else server.server_address[0]
        host = bound.decode() if isinstance(bound, bytes | bytearray) else str(bound)
        return f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"

    @property
    def port(self) -> int:
        """The bound port once started (the configured one before)."""
        return self._port

    @property
    def serving(self) -> bool:
        return self._server is not None

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    def start(self) -> None:
        host = "127.0.0.1" if self._host == "localhost" else self._host
        server = _Server(self, (host, self._configured_port), family=self._family,
                         max_connections=self._max_connections)
        self._server = server
        self._port = int(server.server_address[1])
        try:
            self.bound()
        except BaseException:
            server.server_close()
            self._server = None
            raise
        self._thread = threading.Thread(
            target=server.serve_until_woken,
            name=f"metadata-{self.endpoint}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        if self._thread is not None:
            server.wake()
            self._thread.join(timeout=5)
        server.server_close()
        server.close_connections()
        self.stopped()

    def describe(self) -> str:
        return f"{self.endpoint} metadata on {self.url}"

    def adopt(self, other: object) -> bool:
        """Serve what `other` was built to serve, if it would listen exactly as this one
        does (a reload): the socket stays open, so no client sees a gap and no other
        process can take the port meanwhile."""
        if type(other) is not type(self) or not isinstance(other, LoopbackServer) or (
                other.listen_key() != self.listen_key()):
            return False
        self.take(other)
        return True

    def listen_key(self) -> tuple[object, ...]:
        """Hook: what cannot change without a new listener."""
        return (self._host, self._configured_port, self._max_connections)

    def take(self, other: LoopbackServer) -> None:
        """Hook: take `other`'s targets and collaborators (same class, same key)."""

    def bound(self) -> None:
        """Hook: the socket is bound, nothing is served yet (write the token file)."""

    def stopped(self) -> None:
        """Hook: nothing is served any more."""

    # -- per request -----------------------------------------------------------------------

    def precheck(self, request: Request) -> Reply | None:
        """Hook: refuse a request before routing (None lets it through)."""
        return None

    def handle(self, request: Request) -> Reply:
        raise NotImplementedError

    def reply_headers(self) -> tuple[tuple[str, str], ...]:
        """Hook: headers sent on every reply of this listener, refusals included."""
        return ()

    def _respond(self, h: _Handler) -> Reply:
        path, _, query = h.path.partition("?")
        request = Request(h.command, path, query, h.headers,
                          [k.lower() for k in h.headers.keys()])  # noqa: SIM118 - a Message
        refused = self._refuse(request) or self.precheck(request)
        if refused is not None:
            return refused
        if request.method not in self.methods:
            return text(405, "method not allowed\n", headers=(("Allow", ", ".join(self.methods)),))
        return self.handle(request)

    def _refuse(self, request: Request) -> Reply | None:
        """The checks every listener makes: no body, origin-form target, one loopback
        Host for this port (DNS rebinding), not proxied."""
        names = request.names
        if "transfer-encoding" in names or (
                "content-length" in names
                and (request.headers.get("Content-Length") or "").strip() != "0"):
            return Reply(400, b"request bodies are not accepted\n", close=True)
        if not request.path.startswith("/"):
            return text(400, "bad request target\n")
        host = request.single("Host")
        if host is None or not self._host_ok(host):
            return text(403, "host not allowed\n", refusal="host")
        if "x-forwarded-for" in names or "forwarded" in names:
            return text(403, "forwarded requests are not allowed\n", refusal="forwarded")
        return None

    def _host_ok(self, value: str) -> bool:
        if value in self._hosts:
            return True
        if not host_allowed(value, self.port):
            return False
        if len(self._hosts) < 16:
            self._hosts.add(value)
        return True

    def _serve_one(self, h: _Handler) -> None:
        failed = ""
        try:
            reply = self._respond(h)
        except Exception as exc:  # a bug must cost one 500, not the connection's thread
            failed = type(exc).__name__  # only the type: a message could quote a header
            reply = Reply(500, b"internal error\n", close=True)
        if failed:
            log.error("%s metadata request failed: %s", self.endpoint, failed)
        if reply.close or h.command == "HEAD":  # a HEAD client would not read the body
            h.close_connection = True
        self._count(reply)  # before the write, so a client that saw it sees it counted
        h.wfile.write(self._render(reply, close=h.close_connection))

    def _render(self, reply: Reply, *, close: bool) -> bytes:
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

    def _count(self, reply: Reply) -> None:
        if self._metrics is None:
            return
        key = ("code", str(reply.status))
        counter = self._counters.get(key)
        if counter is None:
            counter = self._counters[key] = self._metrics.metadata_requests.labels(
                self.endpoint, key[1])
        counter.inc()
        if reply.refusal is not None:
            rkey = ("refusal", reply.refusal)
            refusals = self._counters.get(rkey)
            if refusals is None:
                refusals = self._counters[rkey] = self._metrics.metadata_refusals.labels(
                    self.endpoint, reply.refusal)
            refusals.inc()

    def _busy(self, sock: socket.socket) -> None:
        """Too many connections: a canned 503 without a thread, then close."""
        reply = Reply(503, b"busy\n", headers=(("Retry-After", "1"),), refusal="busy")
        self._count(reply)
        with contextlib.suppress(OSError):
            sock.setblocking(False)
            sock.send(self._render(reply, close=True))
            sock.recv(65536)  # take a request already here, so closing sends FIN, not RST


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive
    server_version = "spiffe-bridge"
    sys_version = ""
    disable_nagle_algorithm = True
    server: _Server

    timeout = IDLE_TIMEOUT  # per server: `_Server` derives a class with its own

    def do_GET(self) -> None:
        self.server.owner._serve_one(self)

    def do_PUT(self) -> None:
        self.server.owner._serve_one(self)

    def do_POST(self) -> None:
        self.server.owner._serve_one(self)

    def do_HEAD(self) -> None:
        self.server.owner._serve_one(self)

    def do_DELETE(self) -> None:
        self.server.owner._serve_one(self)

    def send_error(self, code: int, message: str | None = None,
                   explain: str | None = None) -> None:
        """Malformed requests: a short reply that echoes nothing the caller sent."""
        self.close_connection = True
        reply = Reply(code, f"{HTTPStatus(code).phrase}\n".encode(), close=True)
        self.server.owner._count(reply)
        with contextlib.suppress(OSError):
            self.wfile.write(self.server.owner._render(reply, close=True))

    def log_message(self, format: str, *args: Any) -> None:
        return  # never log requests: their headers carry tokens


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def __init__(self, owner: LoopbackServer, address: tuple[str, int], *, family: int,
                 max_connections: int) -> None:
        self.address_family = family
        self.owner = owner
        self._slots = threading.BoundedSemaphore(max_connections)
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._wake_r, self._wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        handler = type("_Handler", (_Handler,), {"timeout": owner._idle_timeout})
        super().__init__(address, handler)

    def serve_until_woken(self) -> None:
        """`serve_forever` without its polling: the accept loop sleeps until a
        connection or `wake()`, so an idle listener costs nothing and stops at once."""
        with selectors.DefaultSelector() as selector:
            selector.register(self.socket, selectors.EVENT_READ)
            selector.register(self._wake_r, selectors.EVENT_READ)
            while True:
                for key, _ in selector.select():
                    if key.fileobj == self._wake_r:
                        return
                    self._accept_one()

    def _accept_one(self) -> None:
        try:
            request, client_address = self.get_request()
        except OSError:
            return
        try:
            self.process_request(request, client_address)
        except Exception:
            self.handle_error(request, client_address)
            self.shutdown_request(request)

    def wake(self) -> None:
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")

    def server_close(self) -> None:
        super().server_close()
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)

    def server_bind(self) -> None:
        # HTTPServer.server_bind would call getfqdn(), a reverse DNS lookup: skip it.
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.socket.bind(self.server_address)
        self.server_address = self.socket.getsockname()
        self.server_name, self.server_port = str(self.server_address[0]), int(
            self.server_address[1])

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self.owner._busy(request)
            self.shutdown_request(request)
            return
        with self._lock:
            self._open.add(request)
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._release(request)
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._release(request)

    def _release(self, request: socket.socket) -> None:
        with self._lock:
            self._open.discard(request)
        self._slots.release()

    def close_connections(self) -> None:
        with self._lock:
            open_now = list(self._open)
        for sock in open_now:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError)):
            return  # clients hang up and idle out; that is not an error
        log.warning("%s metadata connection failed: %s", self.owner.endpoint,
                    type(exc).__name__)
