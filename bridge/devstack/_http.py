"""Loopback HTTP plumbing for the dev-stack emulators. DEVELOPMENT ONLY.

The emulators are written as pure functions from `HttpRequest` to `HttpResponse`, so
unit tests can call them without sockets; this module puts such a function behind a
stdlib `ThreadingHTTPServer` on 127.0.0.1, in a daemon thread.

HTTP/1.0 (one request per connection) is deliberate: no keep-alive connection can
outlive `stop()`. Access logging is off, since request lines and bodies may carry
tokens; only method and path (without query) reach the debug log.
"""

from __future__ import annotations

import email.utils
import logging
import socket
import ssl
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from bridge.devstack._lifecycle import StartStop

_log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
_MAX_BODY = 1 << 20  # 1 MiB: far above any legitimate request to these emulators
_SOCKET_TIMEOUT = 5.0  # a stalled client cannot pin a handler thread for long
_POLL_INTERVAL = 0.02  # how long stop() may wait for the serve loop to notice


@dataclass(frozen=True, slots=True)
class HttpRequest:
    """One received request. `body` may contain secrets: never log it."""

    method: str
    path: str
    query: str
    headers: Mapping[str, str]
    body: bytes = field(default=b"", repr=False)

    def header(self, name: str) -> str:
        """A header by case-insensitive name, "" when absent (SDKs differ in case)."""
        wanted = name.lower()
        return next((v for k, v in self.headers.items() if k.lower() == wanted), "")


@dataclass(frozen=True, slots=True)
class HttpResponse:
    """A reply. A `Date` header is added when absent."""

    status: int
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)


Handler = Callable[[HttpRequest], HttpResponse]


def form_fields(*encoded: str) -> dict[str, str]:
    """Fields of form-urlencoded strings (query, then body); the first value of a name wins."""
    fields: dict[str, str] = {}
    for text in encoded:
        for key, value in parse_qsl(text, keep_blank_values=True):
            fields.setdefault(key, value)
    return fields


def http_date(epoch_seconds: float) -> str:
    """An RFC 7231 HTTP-date (`Date` header value)."""
    return email.utils.formatdate(epoch_seconds, usegmt=True)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], app: Handler,
                 tls: ssl.SSLContext | None = None) -> None:
        super().__init__(address, _RequestHandler)
        self.app = app
        self.tls = tls

    def get_request(self) -> tuple[socket.socket, Any]:
        """With TLS, wrap each accepted connection; its handshake runs in the handler's
        thread (`_RequestHandler.setup`), so a slow client cannot stall accepting."""
        conn, address = super().get_request()
        if self.tls is not None:
            conn = self.tls.wrap_socket(conn, server_side=True, do_handshake_on_connect=False)
        return conn, address

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Keep connection errors (client gone, timeouts) off stderr."""
        _log.debug("devstack http connection error from %s", client_address, exc_info=True)


class _RequestHandler(BaseHTTPRequestHandler):
    server: _Server
    timeout = _SOCKET_TIMEOUT
    server_version = "devstack"
    sys_version = ""

    def setup(self) -> None:
        super().setup()
        if isinstance(self.connection, ssl.SSLSocket):
            self.connection.do_handshake()

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the stdlib access log (request lines may carry tokens in queries)."""

    def _dispatch(self) -> None:
        split = urlsplit(self.path)
        _log.debug("%s %s", self.command, split.path)
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0 or length > _MAX_BODY:
            self._send(HttpResponse(413, b"bad or too large Content-Length\n"))
            return
        body = self.rfile.read(length) if length else b""
        request = HttpRequest(
            method=self.command,
            path=split.path,
            query=split.query,
            headers=dict(self.headers.items()),
            body=body,
        )
        try:
            response = self.server.app(request)
        except Exception:
            _log.exception("devstack emulator failed on %s %s", self.command, split.path)
            response = HttpResponse(500, b"internal error\n")
        self._send(response)

    def _send(self, response: HttpResponse) -> None:
        self.send_response_only(response.status)
        headers = dict(response.headers)
        if not any(k.lower() == "date" for k in headers):
            headers["Date"] = self.date_time_string()
        headers.setdefault("Content-Length", str(len(response.body)))
        headers.setdefault("Connection", "close")
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(response.body)


class LoopbackHttpServer(StartStop):
    """Serves a `Handler` on 127.0.0.1 in a daemon thread; restartable on the same port."""

    def __init__(self, app: Handler, *, port: int = 0, name: str = "devstack-http",
                 tls: ssl.SSLContext | None = None) -> None:
        self._app = app
        self._tls = tls
        self._port = port
        self._name = name
        self._lock = threading.Lock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The bound port (after the first `start()`; kept across restarts).

        Raises:
            RuntimeError: the server was never started and no port was given.
        """
        with self._lock:
            if self._port == 0:
                raise RuntimeError("server not started yet: port unknown")
            return self._port

    @property
    def url(self) -> str:
        """`http://127.0.0.1:<port>` (`https://` with TLS; no trailing slash)."""
        return f"{'https' if self._tls else 'http'}://{LOOPBACK}:{self.port}"

    @property
    def running(self) -> bool:
        """Whether the server is accepting connections."""
        with self._lock:
            return self._server is not None

    def start(self) -> None:
        """Bind (the same port again after a restart) and serve in a daemon thread.

        Raises:
            RuntimeError: already running.
            OSError: the port cannot be bound.
        """
        with self._lock:
            if self._server is not None:
                raise RuntimeError(f"{self._name} already running")
            server = _Server((LOOPBACK, self._port), self._app, self._tls)
            self._port = int(server.server_address[1])
            thread = threading.Thread(
                target=server.serve_forever,
                kwargs={"poll_interval": _POLL_INTERVAL},
                name=f"{self._name}:{self._port}",
                daemon=True,
            )
            thread.start()
            self._server, self._thread = server, thread

    def stop(self) -> None:
        """Stop accepting and close the listening socket (idempotent)."""
        with self._lock:
            server, thread = self._server, self._thread
            self._server = self._thread = None
        if server is not None:
            server.shutdown()
            server.server_close()
        if thread is not None:
            thread.join(timeout=5.0)
