"""HTTP for operators: /metrics (Prometheus), /healthz (live), /readyz (ready, per target).

Live means the event loop still ticks. Ready means every target has delivered at least
once and none is expired; the JSON body says, per target, its state, expiry and last
error class, so a failing probe explains itself.
"""

from __future__ import annotations

import gzip
import json
import threading
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST

from bridge.errors import ServingError
from bridge.model import TargetStatus, utc_iso

LIVENESS_LIMIT = 60.0


def is_ready(statuses: Mapping[str, TargetStatus], now: float) -> bool:
    """`readiness(...)[0]` without building the per-target document (no time formatting):
    the gRPC health status re-checks it on store changes, which with 1,000 targets
    made the full document the daemon's largest cost."""
    return all(s.ready(now) for s in statuses.values())


def readiness(statuses: Mapping[str, TargetStatus], now: float,
              behind: frozenset[str] = frozenset()) -> tuple[bool, dict[str, object]]:
    """/readyz: ready when every target holds a valid credential and its files are up to
    date (`behind`: the targets whose last write failed); `now` is monotonic."""
    targets: dict[str, object] = {}
    ready = True
    for name, s in sorted(statuses.items()):
        c = s.valid_credential(now)
        ok = s.ready(now) and name not in behind
        ready = ready and ok
        targets[name] = {"ready": ok, "state": s.served_state(now).value,
                         "expires_at": utc_iso(c.expires_at) if c else None,
                         "expires_in_seconds": round(c.remaining(now)) if c else None,
                         "last_error": s.last_error, "consecutive_failures":
                         s.consecutive_failures, "outputs_behind": name in behind}
    return ready, {"ready": ready, "targets": targets}


class HealthServer:
    """A `Service`: binds at `start()`, like every listener, so building a daemon
    (`once`, tests) never takes the port."""

    def __init__(self, address: str, *, page: Callable[[], bytes],
                 statuses: Callable[[], Mapping[str, TargetStatus]],
                 now: Callable[[], float], seconds_since_tick: Callable[[], float],
                 behind: Callable[[], frozenset[str]] = frozenset) -> None:
        host, _, port = address.rpartition(":")
        self._bind = (host.strip("[]"), int(port))
        self._server: ThreadingHTTPServer | None = None
        self._page = page  # the /metrics text
        self._statuses = statuses
        self._now = now
        self._since_tick = seconds_since_tick
        self._behind = behind
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> str:
        """`host:port` as bound (as configured before `start()`)."""
        if self._server is None:
            return f"{self._bind[0]}:{self._bind[1]}"
        host, port = self._server.server_address[:2]
        host = host.decode() if isinstance(host, bytes) else str(host)
        return f"{host}:{port}"

    def adopt(self, other: object) -> bool:
        """Serve `other`'s statuses and figures if it would listen on the same address (a
        reload): probes and scrapes never see the port closed."""
        if not isinstance(other, HealthServer) or other._bind != self._bind:
            return False
        self._page, self._statuses, self._now = other._page, other._statuses, other._now
        self._since_tick, self._behind = other._since_tick, other._behind
        return True

    def start(self) -> None:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer._handle(self)

            def log_message(self, format: str, *args: object) -> None:
                return

        try:
            self._server = ThreadingHTTPServer(self._bind, Handler)
        except OSError as exc:
            raise ServingError(f"cannot listen on http://{self.address}: {exc.strerror}",
                               reason="http") from exc
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="http",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()

    def describe(self) -> str:
        return f"metrics and health on http://{self.address}"

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        path = h.path.split("?", 1)[0]
        if path == "/metrics":
            page = self._page()
            if "gzip" in (h.headers.get("Accept-Encoding") or ""):  # what Prometheus sends
                self._reply(h, 200, gzip.compress(page, compresslevel=1), CONTENT_TYPE_LATEST,
                            encoding="gzip")
            else:
                self._reply(h, 200, page, CONTENT_TYPE_LATEST)
        elif path == "/healthz":
            since = self._since_tick()
            live = since < LIVENESS_LIMIT
            live_body = {"live": live, "seconds_since_tick": round(since, 1)}
            self._reply(h, 200 if live else 503, json.dumps(live_body).encode(),
                        "application/json")
        elif path == "/readyz":
            ready, body = readiness(self._statuses(), self._now(), self._behind())
            self._reply(h, 200 if ready else 503, json.dumps(body).encode(), "application/json")
        else:
            self._reply(h, 404, b"not found\n", "text/plain")

    @staticmethod
    def _reply(h: BaseHTTPRequestHandler, code: int, body: bytes, ctype: str, *,
               encoding: str | None = None) -> None:
        h.send_response(code)
        h.send_header("Content-Type", ctype)
        if encoding:
            h.send_header("Content-Encoding", encoding)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)
