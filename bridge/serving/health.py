"""HTTP for operators: /metrics (Prometheus), /healthz (live), /readyz (ready, per target).

Live means the event loop still ticks. Ready means every target has delivered at least
once and none is expired; the JSON body says, per target, its state, expiry and last
error class, so a failing probe explains itself.
"""

from __future__ import annotations

import gzip
import ipaddress
import json
from collections.abc import Callable, Mapping

from prometheus_client import CONTENT_TYPE_LATEST

from bridge.errors import ServingError
from bridge.model import TargetStatus, utc_iso
from bridge.serving.bounded import BoundedServer, Peer
from bridge.serving.http1 import Reply, Request

LIVENESS_LIMIT = 60.0
MAX_CONNECTIONS = 64  # probes and scrapers: a few connections each
HEADER_TIMEOUT = 5.0  # scrapers may sit across a network
_JSON = "application/json"


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


class HealthServer(BoundedServer):
    """A `Service`: binds at `start()`, like every listener, so building a daemon
    (`once`, tests) never takes the port. Bounded like the metadata listeners (a
    connection cap with idle connections evicted first, a deadline per request head),
    so idle connections cannot grow threads or starve probes; and a `Host` that is
    neither an IP literal, `localhost`, nor the configured host is refused with 421, so
    a web page rebinding its DNS name to this address reads nothing."""

    name = "http"

    def __init__(self, address: str, *, page: Callable[[], bytes],
                 statuses: Callable[[], Mapping[str, TargetStatus]],
                 now: Callable[[], float], seconds_since_tick: Callable[[], float],
                 behind: Callable[[], frozenset[str]] = frozenset,
                 max_connections: int = MAX_CONNECTIONS) -> None:
        host, _, port = address.rpartition(":")
        self._bind = (host.strip("[]"), int(port))
        super().__init__(self._bind[0], self._bind[1], max_connections=max_connections,
                         header_timeout=HEADER_TIMEOUT)
        self._page = page  # the /metrics text
        self._statuses = statuses
        self._now = now
        self._since_tick = seconds_since_tick
        self._behind = behind

    @property
    def address(self) -> str:
        """`host:port` as bound (as configured before `start()`)."""
        bound = self.bound_address
        host, port = bound if bound is not None else self._bind
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    def adopt(self, other: object) -> bool:
        """Serve `other`'s statuses and figures if it would listen on the same address (a
        reload): probes and scrapes never see the port closed."""
        if not isinstance(other, HealthServer) or other._bind != self._bind:
            return False
        self._page, self._statuses, self._now = other._page, other._statuses, other._now
        self._since_tick, self._behind = other._since_tick, other._behind
        return True

    def start(self) -> None:
        try:
            self.listen()
        except OSError as exc:
            raise ServingError(f"cannot listen on http://{self.address}: {exc.strerror}",
                               reason="http") from exc
        self.serve()

    def stop(self) -> None:
        self.close()

    def describe(self) -> str:
        return f"metrics and health on http://{self.address}"

    def respond(self, request: Request, peer: Peer) -> Reply:
        if not self._host_ok(request.single("Host")):
            return Reply(421, b"host not allowed\n", close=True)
        if request.method not in ("GET", "HEAD"):
            return Reply(405, b"method not allowed\n", headers=(("Allow", "GET"),))
        return self._page_for(request)

    def _page_for(self, request: Request) -> Reply:
        path = request.path
        if path == "/metrics":
            page = self._page()
            if "gzip" in (request.headers.get("Accept-Encoding") or ""):  # Prometheus asks
                return Reply(200, gzip.compress(page, compresslevel=1), CONTENT_TYPE_LATEST,
                             headers=(("Content-Encoding", "gzip"),))
            return Reply(200, page, CONTENT_TYPE_LATEST)
        if path == "/healthz":
            since = self._since_tick()
            live = since < LIVENESS_LIMIT
            live_body = {"live": live, "seconds_since_tick": round(since, 1)}
            return Reply(200 if live else 503, json.dumps(live_body).encode(), _JSON)
        if path == "/readyz":
            ready, body = readiness(self._statuses(), self._now(), self._behind())
            return Reply(200 if ready else 503, json.dumps(body).encode(), _JSON)
        return Reply(404, b"not found\n", "text/plain")

    def _host_ok(self, value: str | None) -> bool:
        """An IP literal (probes and scrapers use the pod IP), `localhost`, or the
        configured host, with any port; never another DNS name (rebinding)."""
        if value is None:
            return False
        name = _host_name(value)
        if name is None:
            return False
        if name.lower() in ("localhost", self._bind[0].lower()):
            return True
        try:
            ipaddress.ip_address(name)
        except ValueError:
            return False
        return True


def _host_name(value: str) -> str | None:
    """The name part of a Host value (None when malformed); IPv6 only bracketed."""
    if value.startswith("["):
        end = value.find("]")
        rest = value[end + 1:]
        if end < 0 or (rest and not (rest.startswith(":") and rest[1:].isdigit())):
            return None
        return value[1:end]
    name, sep, port = value.partition(":")
    if sep and not (port.isascii() and port.isdigit()):
        return None
    return name or None
