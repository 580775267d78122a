"""A fake SPIRE agent: the SPIFFE Workload API (JWT profile) on a unix socket. DEVELOPMENT ONLY.

The bridge and its tests talk to it exactly as to a SPIRE agent, through py-spiffe or
a raw gRPC channel: service `SpiffeWorkloadAPI` (no proto package on the wire), the
`workload.spiffe.io: true` security header, SPIRE's status codes and messages.

Messages come from our own copy of workload.proto compiled with a package
(`bridge._proto.spiffe.workload_pb2`), because py-spiffe registers the package-less
original in protobuf's default descriptor pool and a second copy would clash. The
handlers are therefore registered by hand under the bare service name.

What it does:
- FetchJWTSVID mints a fresh token per identity on every call (no agent cache).
- FetchJWTBundles streams the full bundle map now and again after every key change.
- ValidateJWTSVID checks alg, kid, signature, `aud` and `exp` against the authorities.
- X.509 profile (only when built with an `X509Authority`; else gRPC answers
  UNIMPLEMENTED): FetchX509SVID streams one X.509-SVID per identity with the bundle,
  and again after `rotate_x509_svids()` or a CA rotation (`X509Authority.rotate`);
  FetchX509Bundles streams the bundle. SVIDs are cached like SPIRE's agent does.

`faults` (a `WorkloadFaults`) injects failures, latency, replacement SVIDs, whole
replacement answers and replacement bundle maps (sent unchecked, even malformed). The
server can be stopped and started again on the same socket to play an agent restart.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NoReturn

import grpc
import jwt
from google.protobuf.struct_pb2 import Struct

from bridge._proto.spiffe import workload_pb2
from bridge.devstack._lifecycle import StartStop
from bridge.devstack.authority import JwtAuthority
from bridge.devstack.faults import GrpcFailure, WorkloadFaults
from bridge.devstack.x509_authority import DEFAULT_X509_SVID_TTL, IssuedSvid, X509Authority

_log = logging.getLogger(__name__)

SERVICE_NAME = "SpiffeWorkloadAPI"
SECURITY_HEADER = "workload.spiffe.io"
DEFAULT_SVID_TTL = 300  # SPIRE's default_jwt_svid_ttl (5m)
MAX_UNIX_SOCKET_PATH = 107  # sun_path is 108 bytes including the NUL

FETCH_JWT_SVID = "FetchJWTSVID"
FETCH_JWT_BUNDLES = "FetchJWTBundles"
VALIDATE_JWT_SVID = "ValidateJWTSVID"
FETCH_X509_SVID = "FetchX509SVID"
FETCH_X509_BUNDLES = "FetchX509Bundles"

_ALLOWED_ALGS = frozenset(
    {"RS256", "RS384", "RS512", "ES256", "ES384", "ES512", "PS256", "PS384", "PS512"}
)
_STREAM_RECHECK_SECONDS = 1.0  # safety net: streams re-check liveness at least this often

BundleKeyStyle = Literal["name", "spiffe_id"]
"""How the bundle map is keyed: `example.org` (py-spiffe's fakes) or `spiffe://example.org`
(SPIRE). py-spiffe and go-spiffe accept both."""


@dataclass(frozen=True, slots=True)
class Identity:
    """One SPIFFE ID the fake agent will issue JWT-SVIDs for, with an optional hint."""

    spiffe_id: str
    hint: str = ""


class _InvalidTokenError(Exception):
    """A JWT-SVID failed ValidateJWTSVID; the message is safe to return (no token)."""


def _abort(context: grpc.ServicerContext, code: grpc.StatusCode, message: str) -> NoReturn:
    context.abort(code, message)
    raise AssertionError("grpc context.abort returned")  # pragma: no cover


def _trust_domain_of(spiffe_id: str) -> str | None:
    if not spiffe_id.startswith("spiffe://"):
        return None
    name = spiffe_id[len("spiffe://") :].split("/", 1)[0]
    return name or None


class WorkloadApiServer(StartStop):
    """The fake agent. Thread-safe; `start()`/`stop()` may be repeated (agent restarts)."""

    def __init__(
        self,
        authority: JwtAuthority,
        socket_path: Path,
        *,
        identities: Iterable[Identity | str] = (),
        svid_ttl: int = DEFAULT_SVID_TTL,
        federated: Sequence[JwtAuthority] = (),
        bundle_key: BundleKeyStyle = "name",
        max_workers: int = 32,
        x509: X509Authority | None = None,
        x509_svid_ttl: int = DEFAULT_X509_SVID_TTL,
    ) -> None:
        """Prepare a server for `socket_path`; nothing listens until `start()`.

        `federated` authorities are added to the bundle map and accepted by
        ValidateJWTSVID; identities are only ever issued in `authority`'s trust domain.
        Every open FetchJWTBundles stream holds one of the `max_workers` threads.

        Raises:
            ValueError: the socket path is too long for AF_UNIX, the TTL is not
                positive, or an identity is outside the authority's trust domain.
        """
        path = Path(socket_path).absolute()
        if len(str(path).encode()) > MAX_UNIX_SOCKET_PATH:
            raise ValueError(
                f"unix socket path is {len(str(path).encode())} bytes, over the AF_UNIX "
                f"limit of {MAX_UNIX_SOCKET_PATH}: {path}"
            )
        self._authority = authority
        self._federated = tuple(federated)
        self._socket_path = path
        self._bundle_key = bundle_key
        self._max_workers = max_workers
        self._cond = threading.Condition()
        self._bundle_version = 0  # bumped on key changes and push_bundles()
        self.faults = WorkloadFaults(on_bundles_change=self.push_bundles)
        self._identities: tuple[Identity, ...] = ()
        self._svid_ttl = DEFAULT_SVID_TTL
        self.set_identities(identities)
        self.set_svid_ttl(svid_ttl)
        self._server: grpc.Server | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._unsubscribe: list[Callable[[], None]] = []
        self._generation = 0  # bumped on stop: open streams of the old run end
        self._x509 = x509
        self._x509_ttl = x509_svid_ttl
        self._x509_version = 0  # bumped on every X.509 change: streams send again
        self._x509_svids: dict[str, IssuedSvid] = {}  # the agent's cache, by SPIFFE ID
        if x509 is not None:
            x509.subscribe(self.rotate_x509_svids)

    # -- configuration -----------------------------------------------------------

    @property
    def socket_path(self) -> Path:
        """Absolute path of the unix socket."""
        return self._socket_path

    @property
    def uri(self) -> str:
        """The endpoint as a SPIFFE_ENDPOINT_SOCKET value: `unix:///abs/path`."""
        return f"unix://{self._socket_path}"

    @property
    def identities(self) -> tuple[Identity, ...]:
        """The identities currently issued."""
        with self._cond:
            return self._identities

    @property
    def svid_ttl(self) -> int:
        """Lifetime in seconds of the JWT-SVIDs minted from now on."""
        with self._cond:
            return self._svid_ttl

    def set_identities(self, identities: Iterable[Identity | str]) -> None:
        """Replace the issued identities (an empty set makes fetches PERMISSION_DENIED).

        Raises:
            ValueError: an identity is not a SPIFFE ID of the authority's trust domain.
        """
        parsed = tuple(i if isinstance(i, Identity) else Identity(i) for i in identities)
        for identity in parsed:
            if _trust_domain_of(identity.spiffe_id) != self._authority.trust_domain:
                raise ValueError(
                    f"identity {identity.spiffe_id!r} is not in trust domain "
                    f"{self._authority.trust_domain!r}"
                )
        with self._cond:
            self._identities = parsed

    def set_svid_ttl(self, seconds: int) -> None:
        """Change the lifetime of JWT-SVIDs minted from now on.

        Raises:
            ValueError: `seconds` is not positive.
        """
        if seconds <= 0:
            raise ValueError(f"svid_ttl must be positive, got {seconds}")
        with self._cond:
            self._svid_ttl = seconds

    @property
    def x509_authority(self) -> X509Authority | None:
        return self._x509

    def rotate_x509_svids(self, *, ttl: int | None = None) -> None:
        """Mint every X.509-SVID anew (optionally with another TTL) and push them."""
        with self._cond:
            if ttl is not None:
                self._x509_ttl = ttl
            self._x509_svids = {}
            self._x509_version += 1
            self._cond.notify_all()

    def x509_svid(self, spiffe_id: str) -> IssuedSvid:
        """The X.509-SVID currently served for `spiffe_id` (minted on first use)."""
        if self._x509 is None:
            raise RuntimeError("this Workload API serves no X.509-SVIDs")
        with self._cond:
            issued = self._x509_svids.get(spiffe_id)
            ttl = self._x509_ttl
        if issued is None:
            issued = self._x509.mint(spiffe_id, ttl=ttl)
            with self._cond:
                issued = self._x509_svids.setdefault(spiffe_id, issued)
        return issued

    def push_bundles(self) -> None:
        """Send the bundle map again on every open FetchJWTBundles stream."""
        with self._cond:
            self._bundle_version += 1
            self._cond.notify_all()

    # -- lifecycle -------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """Whether the server is listening."""
        with self._cond:
            return self._server is not None

    def start(self) -> None:
        """Listen on the unix socket (a stale socket file is replaced).

        Raises:
            RuntimeError: already running, or gRPC could not bind the socket.
        """
        with self._cond:
            if self._server is not None:
                raise RuntimeError("workload API server already running")
            self._socket_path.parent.mkdir(parents=True, exist_ok=True)
            executor = ThreadPoolExecutor(
                max_workers=self._max_workers, thread_name_prefix="devstack-workload"
            )
            server = grpc.server(executor)
            server.add_generic_rpc_handlers((self._handlers(),))
            if server.add_insecure_port(f"unix:{self._socket_path}") == 0:
                executor.shutdown(wait=False)
                raise RuntimeError(f"cannot bind unix socket {self._socket_path}")
            server.start()
            self._server = server
            self._executor = executor
            self._unsubscribe = [a.subscribe(self.push_bundles) for a in self._all_authorities()]
        _log.debug("workload API listening on %s", self._socket_path)

    def stop(self, grace: float = 0.2) -> None:
        """Stop serving: open streams end UNAVAILABLE, and grpc removes the socket file."""
        with self._cond:
            server, executor = self._server, self._executor
            self._server = self._executor = None
            unsubscribes, self._unsubscribe = self._unsubscribe, []
            self._generation += 1
            self._cond.notify_all()
        for unsubscribe in unsubscribes:
            unsubscribe()
        self.faults.interrupt()
        if server is not None:
            server.stop(grace).wait(grace + 5.0)
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)


    # -- gRPC plumbing -----------------------------------------------------------------

    def _handlers(self) -> grpc.GenericRpcHandler:
        x509: dict[str, grpc.RpcMethodHandler] = {} if self._x509 is None else {
            FETCH_X509_SVID: grpc.unary_stream_rpc_method_handler(
                self._fetch_x509_svid,
                request_deserializer=workload_pb2.X509SVIDRequest.FromString,
                response_serializer=workload_pb2.X509SVIDResponse.SerializeToString,
            ),
            FETCH_X509_BUNDLES: grpc.unary_stream_rpc_method_handler(
                self._fetch_x509_bundles,
                request_deserializer=workload_pb2.X509BundlesRequest.FromString,
                response_serializer=workload_pb2.X509BundlesResponse.SerializeToString,
            ),
        }
        return grpc.method_handlers_generic_handler(
            SERVICE_NAME,
            {
                **x509,
                FETCH_JWT_SVID: grpc.unary_unary_rpc_method_handler(
                    self._fetch_jwt_svid,
                    request_deserializer=workload_pb2.JWTSVIDRequest.FromString,
                    response_serializer=workload_pb2.JWTSVIDResponse.SerializeToString,
                ),
                FETCH_JWT_BUNDLES: grpc.unary_stream_rpc_method_handler(
                    self._fetch_jwt_bundles,
                    request_deserializer=workload_pb2.JWTBundlesRequest.FromString,
                    response_serializer=workload_pb2.JWTBundlesResponse.SerializeToString,
                ),
                VALIDATE_JWT_SVID: grpc.unary_unary_rpc_method_handler(
                    self._validate_jwt_svid,
                    request_deserializer=workload_pb2.ValidateJWTSVIDRequest.FromString,
                    response_serializer=workload_pb2.ValidateJWTSVIDResponse.SerializeToString,
                ),
            },
        )

    def _admit(self, context: grpc.ServicerContext, operation: str) -> None:
        """SPIRE's header check first, then the fault switches."""
        values = [v for k, v in context.invocation_metadata() if k == SECURITY_HEADER]
        if values != ["true"]:
            _abort(
                context, grpc.StatusCode.INVALID_ARGUMENT, "security header missing from request"
            )
        failure: GrpcFailure | None = self.faults.before(operation)
        if failure is not None:
            _abort(context, failure.code, failure.message)

    # -- RPCs --------------------------------------------------------------------------

    def _fetch_jwt_svid(self, request: Any, context: grpc.ServicerContext) -> Any:
        self._admit(context, FETCH_JWT_SVID)
        audience = tuple(str(a) for a in request.audience)
        if not audience:
            _abort(context, grpc.StatusCode.INVALID_ARGUMENT, "audience must be specified")
        with self._cond:
            identities, ttl = self._identities, self._svid_ttl
        wanted = str(request.spiffe_id)
        entries = self.faults.take_svid_list(wanted, audience)
        if entries is not None:  # a faulty agent: the answer is sent exactly as given
            return workload_pb2.JWTSVIDResponse(svids=[
                workload_pb2.JWTSVID(spiffe_id=e.spiffe_id, svid=e.svid, hint=e.hint)
                for e in entries])
        if wanted:
            if _trust_domain_of(wanted) is None:
                _abort(
                    context,
                    grpc.StatusCode.INVALID_ARGUMENT,
                    "invalid requested SPIFFE ID: scheme is missing or invalid",
                )
            identities = tuple(i for i in identities if i.spiffe_id == wanted)
        if not identities:
            _abort(context, grpc.StatusCode.PERMISSION_DENIED, "no identity issued")
        replacement = self.faults.take_svid_replacement()
        svids = []
        for identity in identities:
            if replacement is None:
                token = self._authority.mint(identity.spiffe_id, audience, ttl)
            elif isinstance(replacement, str):
                token = replacement
            else:
                token = replacement(identity.spiffe_id, audience)
            svids.append(
                workload_pb2.JWTSVID(spiffe_id=identity.spiffe_id, svid=token, hint=identity.hint)
            )
        return workload_pb2.JWTSVIDResponse(svids=svids)

    def _fetch_jwt_bundles(self, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        self._admit(context, FETCH_JWT_BUNDLES)
        with self._cond:
            generation = self._generation
        if not context.add_callback(self._wake_streams):
            return  # the client is already gone
        sent: int | None = None
        while True:
            with self._cond:
                idle = self._generation == generation and self._bundle_version == sent
                if idle and context.is_active():
                    self._cond.wait(_STREAM_RECHECK_SECONDS)  # woken by changes and by exit
                stopping = self._generation != generation
                version = self._bundle_version
            if stopping:
                _abort(context, grpc.StatusCode.UNAVAILABLE, "workload API server is stopping")
            if not context.is_active():
                return
            if version == sent:
                continue
            sent = version
            yield self._bundles_response()

    def _x509_stream(self, context: grpc.ServicerContext,
                     answer: Callable[[], Any]) -> Iterator[Any]:
        """Send `answer()` now and after every X.509 change, until the client leaves."""
        with self._cond:
            generation = self._generation
        if not context.add_callback(self._wake_streams):
            return
        sent: int | None = None
        while True:
            with self._cond:
                idle = self._generation == generation and self._x509_version == sent
                if idle and context.is_active():
                    self._cond.wait(_STREAM_RECHECK_SECONDS)
                stopping = self._generation != generation
                version = self._x509_version
            if stopping:
                _abort(context, grpc.StatusCode.UNAVAILABLE, "workload API server is stopping")
            if not context.is_active():
                return
            if version == sent:
                continue
            sent = version
            yield answer()

    def _fetch_x509_svid(self, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        self._admit(context, FETCH_X509_SVID)
        with self._cond:
            identities = self._identities
        if not identities:
            _abort(context, grpc.StatusCode.PERMISSION_DENIED, "no identity issued")
        authority = self._x509
        assert authority is not None  # registered only with one

        def answer() -> Any:
            bundle = authority.bundle_der()
            svids = []
            for identity in identities:
                issued = self.x509_svid(identity.spiffe_id)
                svids.append(workload_pb2.X509SVID(
                    spiffe_id=identity.spiffe_id, x509_svid=b"".join(issued.chain),
                    x509_svid_key=issued.key, bundle=bundle, hint=identity.hint))
            return workload_pb2.X509SVIDResponse(svids=svids)

        yield from self._x509_stream(context, answer)

    def _fetch_x509_bundles(self, request: Any, context: grpc.ServicerContext
                            ) -> Iterator[Any]:
        self._admit(context, FETCH_X509_BUNDLES)
        authority = self._x509
        assert authority is not None
        yield from self._x509_stream(context, lambda: workload_pb2.X509BundlesResponse(
            bundles={authority.trust_domain: authority.bundle_der()}))

    def _validate_jwt_svid(self, request: Any, context: grpc.ServicerContext) -> Any:
        self._admit(context, VALIDATE_JWT_SVID)
        if not request.audience:
            _abort(context, grpc.StatusCode.INVALID_ARGUMENT, "audience must be specified")
        if not request.svid:
            _abort(context, grpc.StatusCode.INVALID_ARGUMENT, "svid must be specified")
        try:
            claims = self._verify(str(request.svid), str(request.audience))
        except _InvalidTokenError as err:
            _abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(err))
        struct = Struct()
        struct.update(claims)
        return workload_pb2.ValidateJWTSVIDResponse(spiffe_id=str(claims["sub"]), claims=struct)

    # -- helpers -----------------------------------------------------------------------

    def _wake_streams(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def _all_authorities(self) -> tuple[JwtAuthority, ...]:
        return (self._authority, *self._federated)

    def _bundles_response(self) -> Any:
        replaced = self.faults.bundle_replacement()
        if replaced is not None:
            return workload_pb2.JWTBundlesResponse(bundles=replaced)
        bundles: dict[str, bytes] = {}
        for authority in self._all_authorities():
            name = authority.trust_domain
            key = name if self._bundle_key == "name" else f"spiffe://{name}"
            bundles[key] = _json_bytes(authority.spiffe_bundle())
        return workload_pb2.JWTBundlesResponse(bundles=bundles)

    def _verify(self, token: str, audience: str) -> dict[str, Any]:
        """Validate like go-spiffe's jwtsvid.ParseAndValidate; raise _InvalidTokenError."""
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError as err:
            raise _InvalidTokenError(f"unable to parse JWT token: {err}") from err
        alg = header.get("alg")
        if alg not in _ALLOWED_ALGS:
            raise _InvalidTokenError(f"unsupported token signature algorithm {alg!r}")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise _InvalidTokenError("token header missing key id")
        sub = unverified.get("sub")
        trust_domain = _trust_domain_of(sub) if isinstance(sub, str) else None
        if trust_domain is None:
            raise _InvalidTokenError("token has an invalid subject claim")
        authority = next(
            (a for a in self._all_authorities() if a.trust_domain == trust_domain), None
        )
        if authority is None:
            raise _InvalidTokenError(f"no bundle found for trust domain {trust_domain!r}")
        key = authority.public_key(kid)
        if key is None:
            raise _InvalidTokenError(
                f"no JWT authority {kid!r} found for trust domain {trust_domain!r}"
            )
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[alg],
                audience=audience,
                options={"require": ["exp", "aud", "sub"]},
            )
        except (jwt.PyJWTError, ValueError, TypeError) as err:  # TypeError: alg vs key type
            raise _InvalidTokenError(f"token validation failed: {err}") from err
        return claims


def _json_bytes(document: dict[str, Any]) -> bytes:
    return json.dumps(document, separators=(",", ":")).encode()
