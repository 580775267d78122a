"""The loopback HTTP/1.1 server under every metadata emulator.

What each emulator gets without writing it again (on top of `bridge.serving.bounded`:
bounded threads, a deadline for each request head, idle and half-sent connections
evicted first, strict parsing):

- **Loopback callers only, and no rebinding.** The listener is bound to a loopback
  address (config enforces it). A `Host` that is not a loopback literal or `localhost`
  with this listener's port is refused, so a web page whose DNS name resolves to
  127.0.0.1 cannot read credentials (aws-vault#578). A request carrying any proxy
  header (`X-Forwarded-*`, `Forwarded`, `X-Real-IP`, `Via`, ...) came through a proxy
  and is refused, as real IMDS and rolesanywhere `serve` do.
- **Only the allowed local users.** With `allowed_uids`, the uid owning the caller's
  socket (`peers.peer_uid`) must be listed, else 403 (refusal `uid`).
- **Quiet.** No request is logged: headers carry tokens. Request bodies are refused.

Subclasses implement `handle(request) -> Reply`, and may refuse earlier in `precheck`
(GCE's `Metadata-Flavor`) and add headers to every reply (`reply_headers`).
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from typing import Any, ClassVar

from bridge.metrics import Metrics
from bridge.serving.bounded import IDLE_TIMEOUT, MAX_CONNECTIONS, BoundedServer, Peer
from bridge.serving.http1 import Reply, Request
from bridge.serving.metadata.messages import host_allowed, text
from bridge.serving.metadata.peers import peer_uid

log = logging.getLogger(__name__)

__all__ = ["IDLE_TIMEOUT", "MAX_CONNECTIONS", "PROXY_HEADERS", "LoopbackServer"]

# Headers a proxy adds: their presence means the request did not come straight from a
# local process. Any `x-forwarded-` name is refused too.
PROXY_HEADERS = frozenset({
    "forwarded", "via", "x-real-ip", "x-client-ip", "client-ip", "true-client-ip",
    "x-cluster-client-ip", "x-originating-ip", "x-remote-ip", "x-remote-addr",
    "cf-connecting-ip", "fastly-client-ip", "x-proxyuser-ip", "x-envoy-external-address",
})


class LoopbackServer(BoundedServer):
    """A metadata listener (a `daemon.Service`): binds at `start()`, not before, so
    building a daemon for `once` never takes the port."""

    endpoint: ClassVar[str] = "metadata"  # metric label and log name
    methods: ClassVar[tuple[str, ...]] = ("GET",)

    def __init__(self, address: str, *, metrics: Metrics | None = None,
                 max_connections: int = MAX_CONNECTIONS,
                 idle_timeout: float = IDLE_TIMEOUT,
                 allowed_uids: Collection[int] | None = None) -> None:
        host, _, port = address.rpartition(":")
        self._host = host.strip("[]")
        bind = "127.0.0.1" if self._host == "localhost" else self._host
        super().__init__(bind, int(port), max_connections=max_connections,
                         idle_timeout=idle_timeout)
        self.name = f"metadata-{self.endpoint}"
        self._configured_port = self._port = int(port)
        self._metrics = metrics
        self._allowed_uids = None if allowed_uids is None else frozenset(allowed_uids)
        self._counters: dict[tuple[str, str], Any] = {}
        self._hosts: set[str] = set()  # Host values already accepted (bounded)

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def address(self) -> str:
        """`host:port` as bound (the configured one before `start()`)."""
        bound = self.bound_address
        host = self._host if bound is None else bound[0]
        return f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"

    @property
    def port(self) -> int:
        """The bound port once started (the configured one before)."""
        return self._port

    @property
    def serving(self) -> bool:
        return self.bound_address is not None

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    @property
    def allowed_uids(self) -> frozenset[int] | None:
        """Which local uids may read this listener (None: any)."""
        return self._allowed_uids

    def readers(self) -> str:
        """Who may read it, as `describe()` says it."""
        uids = self._allowed_uids
        if uids is None:
            return "every local user"
        return ("uid " if len(uids) == 1 else "uids ") + ", ".join(map(str, sorted(uids)))

    def start(self) -> None:
        self.listen()
        bound = self.bound_address
        assert bound is not None
        self._port = bound[1]
        try:
            self.bound()
        except BaseException:
            self.close()
            raise
        self.serve()

    def stop(self) -> None:
        if self.bound_address is None:
            return
        self.close()
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
        self._allowed_uids = other._allowed_uids
        self.take(other)
        return True

    def listen_key(self) -> tuple[object, ...]:
        """Hook: what cannot change without a new listener."""
        return (self._host, self._configured_port, self.max_connections)

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

    def respond(self, request: Request, peer: Peer) -> Reply:
        refused = self._refuse(request) or self._refuse_uid(peer) or self.precheck(request)
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
        if any(n in PROXY_HEADERS or n.startswith("x-forwarded-") for n in names):
            return text(403, "forwarded requests are not allowed\n", refusal="forwarded")
        return None

    def _refuse_uid(self, peer: Peer) -> Reply | None:
        allowed = self._allowed_uids
        if allowed is None:
            return None
        if not peer.uid_known:  # once per connection: a socket's owner does not change
            peer.uid, peer.uid_known = peer_uid(peer.sock), True
        if peer.uid is None or peer.uid not in allowed:
            return text(403, "this local user may not read this endpoint\n", refusal="uid")
        return None

    def _host_ok(self, value: str) -> bool:
        if value in self._hosts:
            return True
        if not host_allowed(value, self.port):
            return False
        if len(self._hosts) < 16:
            self._hosts.add(value)
        return True

    def counted(self, reply: Reply) -> None:
        if self._metrics is None:
            return
        key = ("code", str(reply.status))
        counter = self._counters.get(key)
        if counter is None:
            counter = self._counters[key] = self._metrics.metadata_requests.labels(
                self.endpoint, key[1])
        counter.inc()
        if reply.refusal is not None:
            self.dropped(reply.refusal)

    def dropped(self, reason: str) -> None:
        if self._metrics is None:
            return
        rkey = ("refusal", reason)
        refusals = self._counters.get(rkey)
        if refusals is None:
            refusals = self._counters[rkey] = self._metrics.metadata_refusals.labels(
                self.endpoint, reason)
        refusals.inc()
