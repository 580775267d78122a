"""JWT-SVIDs for other processes, from the SPIRE agent's SPIFFE Broker API.

The bridge is a *broker*: it names a workload by its PID (`WorkloadPIDReference`), and
the agent attests that PID with its own workload attestors and answers with the
JWT-SVIDs that workload is entitled to. The bridge never picks the identity. Transport
is mTLS with the bridge's own X.509-SVID (`broker_tls`); every request carries
`broker.spiffe.io: true`. Like the Workload API source: a deadline on every call,
retries of what the spec calls transient (bounded by the caller's deadline), the same
error classes, and each SVID checked and its signature verified against the JWT
bundles the agent streams (`SubscribeToJWTBundles`, referenced by our own PID).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.any_pb2 import Any as AnyMessage
from spiffe import JwtBundleSet, TrustDomain, X509Source
from spiffe.errors import PySpiffeError

from bridge import jwt_svid
from bridge._proto.spiffe.broker import api_pb2, api_pb2_grpc
from bridge.errors import SourceError
from bridge.model import JwtSvid
from bridge.sources.broker_tls import AgentIdentity, BrokerTlsHop, TlsMaterial
from bridge.sources.bundles import parse_bundles

log = logging.getLogger(__name__)

SECURITY_HEADER = ("broker.spiffe.io", "true")
_CHANNEL_OPTIONS = [  # reconnect soon after the agent is back (grpc's default waits 2 min)
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
]
_RETRYABLE = {
    grpc.StatusCode.UNAVAILABLE: "unavailable",
    grpc.StatusCode.DEADLINE_EXCEEDED: "timeout",
    grpc.StatusCode.RESOURCE_EXHAUSTED: "rate_limited",
    grpc.StatusCode.ABORTED: "unavailable",
    grpc.StatusCode.UNKNOWN: "unavailable",
}
# Permanent for this caller: trying again gives the same answer.
_PERMANENT = {
    grpc.StatusCode.PERMISSION_DENIED: "no_identity",
    grpc.StatusCode.UNAUTHENTICATED: "attestation_failed",
    grpc.StatusCode.NOT_FOUND: "attestation_failed",
    grpc.StatusCode.INVALID_ARGUMENT: "invalid_argument",
    grpc.StatusCode.UNIMPLEMENTED: "unimplemented",
    grpc.StatusCode.FAILED_PRECONDITION: "attestation_failed",
}
ATTEMPTS = 3
BUNDLE_WAIT = 2.0


@dataclass(frozen=True, slots=True)
class BrokerConfig:
    """`broker:`: the agent's broker endpoint, who the agent must be, who we are."""

    socket: str  # unix:///path of the agent's `experimental.broker.socket_path`
    agent_id: str  # the agent's SPIFFE ID, or a prefix ending in /*
    spiffe_id: str | None = None  # which of the bridge's X.509-SVIDs to present
    timeout: float = 5.0


class BrokerClient:
    """FetchJWTSVID for a PID; the JWT bundles; connection state for health."""

    def __init__(self, config: BrokerConfig, *, workload_api_socket: str,
                 now: Callable[[], float], monotonic: Callable[[], float] = time.monotonic,
                 on_up: Callable[[bool], None] | None = None,
                 material: Callable[[], TlsMaterial] | None = None) -> None:
        """`material`: where the TLS client SVID and the agent's bundle come from; by
        default py-spiffe's X509Source on `workload_api_socket` (the dev stack and tests
        may hand their own)."""
        self._config = config
        self._given_material = material
        self._workload_api = workload_api_socket
        self._agent = AgentIdentity(config.agent_id)
        self._now = now
        self._monotonic = monotonic
        self._on_up = on_up or (lambda _up: None)
        self._lock = threading.Lock()
        self._x509: X509Source | None = None
        self._hop: BrokerTlsHop | None = None
        self._channel: grpc.Channel | None = None
        self._stub: Any = None
        self._bundles: JwtBundleSet | None = None
        self._first_bundles = threading.Event()
        self._closed = threading.Event()
        self._bundle_thread: threading.Thread | None = None
        self._bundle_call: Any = None

    @property
    def config(self) -> BrokerConfig:
        return self._config

    # -- public -------------------------------------------------------------------------

    def fetch(self, pid: int, audience: str, *, deadline: float) -> list[JwtSvid]:
        """Every JWT-SVID the agent issues to process `pid` for `audience`, checked and
        verified. `deadline` is monotonic. Raises SourceError (classified)."""
        if pid <= 0:
            raise SourceError("the caller's process is not visible to the bridge (pid 0: "
                              "another PID namespace?)", reason="no_pid")
        stub = self._connect()
        delay = 0.05
        for attempt in range(1, ATTEMPTS + 1):
            left = deadline - self._monotonic()
            if left <= 0:
                raise SourceError("the request's deadline passed before the broker answered",
                                  retryable=True, reason="timeout")
            try:
                response = stub.FetchJWTSVID(
                    api_pb2.FetchJWTSVIDRequest(reference=_pid_reference(pid),
                                                audience=[audience]),
                    timeout=min(left, self._config.timeout), metadata=[SECURITY_HEADER])
                break
            except grpc.RpcError as exc:
                error = self._classify(exc)
                if not error.retryable or attempt == ATTEMPTS or (
                        deadline - self._monotonic() <= delay):
                    raise error from None
                time.sleep(delay)
                delay *= 2
        self._on_up(True)
        return [self._check(s.svid, s.spiffe_id, audience) for s in response.svids]

    def jwt_bundles(self) -> JwtBundleSet | None:
        with self._lock:
            return self._bundles

    def warm(self) -> None:
        """Connect ahead of the first request (blocking; never raises): our X.509-SVID,
        the hop, the channel and the bundle stream, so a workload's first request pays
        only for its own attestation and exchange."""
        try:
            self._connect()
            if self._given_material is None:
                self._source()
        except (SourceError, ValueError, OSError) as exc:
            log.warning("broker client not ready yet (the first request retries): %s", exc)

    def close(self) -> None:
        self._closed.set()
        with self._lock:
            call, channel, hop, source = self._bundle_call, self._channel, self._hop, self._x509
            self._bundle_call = self._channel = self._hop = self._x509 = self._stub = None
        if call is not None:
            call.cancel()
        if self._bundle_thread is not None:
            self._bundle_thread.join(timeout=5)
        if channel is not None:
            channel.close()
        if hop is not None:
            hop.close()
        if source is not None:
            source.close()

    # -- connection ---------------------------------------------------------------------

    def _connect(self) -> Any:
        with self._lock:
            if self._stub is not None:
                return self._stub
            if self._closed.is_set():
                raise SourceError("the broker client is closed", reason="unavailable")
            hop = BrokerTlsHop(self._config.socket.removeprefix("unix://").removeprefix("unix:"),
                               agent=self._agent,
                               material=self._given_material or self._material,
                               handshake_timeout=self._config.timeout)
            hop.start()
            self._hop = hop
            self._channel = grpc.insecure_channel(hop.address, options=_CHANNEL_OPTIONS)
            self._stub = api_pb2_grpc.APIStub(self._channel)
            self._bundle_thread = threading.Thread(target=self._watch_bundles,
                                                   name="broker-bundles", daemon=True)
            self._bundle_thread.start()
            return self._stub

    def _material(self) -> TlsMaterial:
        """The current SVID and the agent trust domain's bundle (hop thread)."""
        source = self._source()
        context = source.get_x509_context()
        svid = context.default_svid
        bundle = context.x509_bundle_set.get_bundle_for_trust_domain(
            TrustDomain(self._agent.trust_domain))
        return TlsMaterial(chain=tuple(svid.cert_chain), key=svid.private_key,
                           authorities=tuple(bundle.x509_authorities) if bundle else ())

    def _source(self) -> X509Source:
        with self._lock:
            source = self._x509
        if source is not None and not source.is_closed():
            return source
        wanted = self._config.spiffe_id

        def pick(svids: list[Any]) -> Any:
            for svid in svids:
                if wanted is None or str(svid.spiffe_id) == wanted:
                    return svid
            raise ValueError(f"the Workload API gives this bridge no X.509-SVID {wanted}")

        if self._closed.is_set():
            raise ValueError("the broker client is closed")
        try:
            source = X509Source(socket_path=self._workload_api,
                                timeout_in_seconds=self._config.timeout, svid_picker=pick)
        except PySpiffeError as exc:
            raise ValueError(f"no X.509-SVID from the Workload API: {exc}") from exc
        with self._lock:
            closed, self._x509 = self._closed.is_set(), source
        if closed:  # closed while it connected: it must not outlive us
            source.close()
            raise ValueError("the broker client is closed")
        return source

    def _watch_bundles(self) -> None:
        """SubscribeToJWTBundles (referenced by our own PID), reconnecting with backoff."""
        backoff = 0.2
        while not self._closed.is_set():
            stub = self._stub
            if stub is None:
                return
            try:
                call = stub.SubscribeToJWTBundles(
                    api_pb2.SubscribeToJWTBundlesRequest(reference=_pid_reference(os.getpid())),
                    metadata=[SECURITY_HEADER])
                with self._lock:
                    self._bundle_call = call
                for response in call:
                    parsed = parse_bundles(dict(response.bundles))
                    with self._lock:
                        self._bundles = parsed.bundles
                    self._first_bundles.set()
                    self._on_up(True)  # the agent answers: broker_up even before a request
                    backoff = 0.2
            except grpc.RpcError as exc:
                if self._closed.is_set():
                    return
                if _code(exc) in _RETRYABLE:
                    self._on_up(False)
                log.debug("broker JWT bundle stream: %s", _code(exc))
            self._closed.wait(backoff)
            backoff = min(backoff * 2, 5.0)

    # -- checks -------------------------------------------------------------------------

    def _classify(self, exc: grpc.RpcError) -> SourceError:
        code = _code(exc)
        details = _details(exc)
        if code in _RETRYABLE:
            self._on_up(False)
            hop = self._hop
            why = hop.last_error if hop is not None and hop.last_error else details
            return SourceError(f"SPIFFE Broker API {code.name}: {why}", retryable=True,
                               reason=_RETRYABLE[code])
        self._on_up(True)
        if code in _PERMANENT:
            return SourceError(f"SPIFFE Broker API {code.name}: {details}", retryable=False,
                               reason=_PERMANENT[code])
        return SourceError(f"SPIFFE Broker API {code}: {details}", retryable=False,
                           reason="broker_error")

    def _wait_bundles(self) -> JwtBundleSet:
        """The bundles to verify with: the first message is sent at once by the agent."""
        self._first_bundles.wait(min(self._config.timeout, BUNDLE_WAIT))
        bundles = self.jwt_bundles()
        if bundles is None:
            raise jwt_svid.InvalidSvidError("no JWT bundle from the agent yet to verify it "
                                            "with", no_bundle=True)
        return bundles

    def _check(self, token: str, spiffe_id: str, audience: str) -> JwtSvid:
        now, mono = self._now(), self._monotonic()
        try:
            header = jwt_svid.check_shape(token)
            claims = jwt_svid.unverified_claims(token)
            jwt_svid.check_claims(claims, audience=audience, spiffe_id=spiffe_id, now=now)
            jwt_svid.verify_signature(token, header, str(claims["sub"]), self._wait_bundles())
        except jwt_svid.InvalidSvidError as exc:
            raise SourceError(f"unusable JWT-SVID from the broker: {exc}", retryable=True,
                              reason="invalid_svid") from None
        left = float(claims["exp"]) - now
        issued = claims.get("iat")
        return JwtSvid(spiffe_id=spiffe_id, audience=audience, expires_at=now + left,
                       issued_at=float(issued) if isinstance(issued, int) else now,
                       token=token, deadline=mono + left)


def _pid_reference(pid: int) -> api_pb2.WorkloadReference:
    reference = AnyMessage()
    reference.Pack(api_pb2.WorkloadPIDReference(pid=pid))
    return api_pb2.WorkloadReference(reference=reference)


def _code(exc: grpc.RpcError) -> grpc.StatusCode:
    code = exc.code() if callable(getattr(exc, "code", None)) else None
    return code if isinstance(code, grpc.StatusCode) else grpc.StatusCode.UNKNOWN


def _details(exc: grpc.RpcError) -> str:
    details = exc.details() if callable(getattr(exc, "details", None)) else ""
    text = " ".join(str(details or "").split())
    return text if len(text) <= 300 else text[:297] + "..."
