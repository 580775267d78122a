"""JWT-SVIDs from the SPIFFE Workload API, through py-spiffe.

py-spiffe raises at construction when the agent socket does not exist yet, does not
retry unary calls, and checks no signature on fetch; this adapter adds what the daemon
needs on top: lazy (re)connection, a deadline on every call, the spec's retry
classification, an expiry margin, and a local signature check against the JWT bundles
it watches on the bundle stream.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
import jwt
from spiffe import JwtBundleSet, SpiffeId
from spiffe._proto import workload_pb2
from spiffe.errors import ArgumentError, PySpiffeError
from spiffe.svid.errors import InvalidTokenError, TokenExpiredError
from spiffe.svid.jwt_svid_validator import JwtSvidValidator
from spiffe.workloadapi.errors import FetchJwtSvidError
from spiffe.workloadapi.handle_error import handle_error

from bridge import jwt_svid
from bridge.errors import SourceError
from bridge.model import JwtSvid
from bridge.sources.bundles import BundleParsingClient, ParsedBundles

log = logging.getLogger(__name__)
BUNDLE_WAIT = 2.0  # seconds a first fetch waits for the first bundle message
# STS's WebIdentityToken limit; SPIRE's JWT-SVIDs are well under 1 KiB.
MAX_SVID_LENGTH = 20_000
_FAR = 2**40  # an `exp` no clock reaches: py-spiffe's own check passes it

# SPIFFE Workload Endpoint §6: these mean "not yet / try again"; anything else is a bug.
_RETRYABLE = {
    grpc.StatusCode.UNAVAILABLE: "unavailable",
    grpc.StatusCode.PERMISSION_DENIED: "permission_denied",
    grpc.StatusCode.DEADLINE_EXCEEDED: "timeout",
    grpc.StatusCode.RESOURCE_EXHAUSTED: "rate_limited",
    grpc.StatusCode.ABORTED: "unavailable",
    grpc.StatusCode.UNKNOWN: "unavailable",
}
_PERMANENT = {
    grpc.StatusCode.INVALID_ARGUMENT: "invalid_argument",
    grpc.StatusCode.UNIMPLEMENTED: "unimplemented",
}


class WorkloadApiSource:
    """Fetches a JWT-SVID per exchange; watches bundles to check signatures locally."""

    def __init__(
        self,
        socket: str,
        *,
        timeout: float,
        min_remaining: float = 30.0,
        now: Callable[[], float],
        monotonic: Callable[[], float] = time.monotonic,
        cloud_now: Callable[[str | None], float | None] = lambda _judge: None,
        on_up: Callable[[bool], None] | None = None,
        on_skipped: Callable[[str, int], None] | None = None,
    ) -> None:
        self._socket = socket
        self._timeout = timeout
        self._min_remaining = min_remaining
        self._now = now
        self._monotonic = monotonic
        self._cloud_now = cloud_now
        self._on_up = on_up or (lambda _up: None)
        self._on_skipped = on_skipped or (lambda _reason, _count: None)
        self._bundle_problems: dict[str, str] = {}  # trust domain -> what was skipped
        self._lock = threading.Lock()
        self._client: Any = None
        self._stream: Any = None
        self._bundles: JwtBundleSet | None = None
        self._first_bundles = threading.Event()  # set by the first bundles or stream error
        self._bundle_error: str | None = None  # why the stream failed, until bundles arrive

    def fetch(self, audience: str, spiffe_id: str | None, judge: str | None = None) -> JwtSvid:
        client = self._connect()
        try:
            token = _fetch_token(client, audience, spiffe_id or "", self._timeout)
            # py-spiffe's rule (expired by this host's clock) until a cloud's clock is
            # known; then the expiry margin in `_check` judges by that clock instead.
            local = None if self._cloud_now(judge) is not None else self._now()
            fetched = _parse(token, audience, now=local)
        except PySpiffeError as exc:
            error = _classify(exc)
            self._on_up(error.reason not in {"unavailable", "timeout"})
            raise error from exc
        self._on_up(True)
        svid = self._check(fetched, audience, spiffe_id, judge)
        log.debug("fetched JWT-SVID for %s (aud %s), %.0fs left", svid.spiffe_id, audience,
                  svid.expires_at - self._now())
        return svid

    def jwt_bundles(self) -> JwtBundleSet | None:
        with self._lock:
            return self._bundles

    def watch_bundles(self) -> bool:
        """Start (or restart, after the stream ended) the bundle watch without fetching an
        SVID: gRPC callers are verified, and revocations seen, even while every target's
        next refresh is far away (a warm restart). True once bundles have arrived."""
        try:
            self._connect()
        except SourceError:
            return False
        return self.jwt_bundles() is not None

    def _check(self, fetched: Any, audience: str, spiffe_id: str | None,
               judge: str | None) -> JwtSvid:
        token = str(fetched.token)
        if len(token) > MAX_SVID_LENGTH:
            raise SourceError(f"JWT-SVID is {len(token)} characters, over the "
                              f"{MAX_SVID_LENGTH} STS accepts", retryable=True,
                              reason="invalid_svid")
        now, mono = self._now(), self._monotonic()
        # The token's times are the SPIRE server's: judge them by the clouds' clock when
        # it is known (it rides the monotonic clock, so a stepped host clock is no matter).
        issuer_now = self._cloud_now(judge) or now
        try:
            # `_parse` decoded both already (PyJWT's rules); the shape rules judge them.
            header = jwt_svid.check_shape(token, header=fetched.header)
            claims = fetched.claims
            jwt_svid.check_claims(claims, audience=audience, spiffe_id=spiffe_id,
                                  now=issuer_now, issuer_now=now)
            expired = False
        except jwt_svid.InvalidSvidError as exc:
            if not exc.expired:
                raise SourceError(f"unusable JWT-SVID from the agent: {exc}", retryable=True,
                                  reason="invalid_svid") from None
            expired = True
        left = float(claims["exp"]) - issuer_now
        if expired or left < self._min_remaining:
            raise SourceError(
                f"JWT-SVID for {fetched.spiffe_id} expires in {left:.0f}s, less than the "
                f"{self._min_remaining:.0f}s margin (agent cache past its life?)",
                retryable=True, reason="svid_expiring")
        self._verify_locally(token, header, str(claims["sub"]))
        issued = claims.get("iat")
        issued_at = now - (issuer_now - issued) if isinstance(issued, int) else now
        return JwtSvid(spiffe_id=str(fetched.spiffe_id), audience=audience,
                       expires_at=now + left, issued_at=issued_at, token=token,
                       deadline=mono + left)

    def _verify_locally(self, token: str, header: dict[str, Any], sub: str) -> None:
        with self._lock:
            bundles, error = self._bundles, self._bundle_error
        if bundles is None and error is not None:
            raise SourceError(f"the agent's JWT bundles are unusable ({error}); an SVID "
                              "that cannot be verified is not sent", retryable=True,
                              reason="invalid_bundle")
        if bundles is None:
            return  # no bundle yet: the cloud's STS still verifies the signature
        try:
            jwt_svid.verify_signature(token, header, sub, bundles)
        except jwt_svid.InvalidSvidError as exc:
            problem = self._bundle_problems.get(str(SpiffeId(sub).trust_domain))
            if problem is not None and (exc.no_bundle or exc.unknown_key):
                raise SourceError(f"the agent's JWT bundles are unusable ({problem}); an "
                                  f"SVID that cannot be verified is not sent ({exc})",
                                  retryable=True, reason="invalid_bundle") from None
            if exc.no_bundle:
                raise SourceError(str(exc), retryable=True, reason="invalid_svid") from None
            raise SourceError(f"JWT-SVID failed local validation: {exc}",
                              retryable=True, reason="invalid_svid") from None

    def _connect(self) -> Any:
        with self._lock:
            client = self._client
            if client is None:
                try:
                    client = BundleParsingClient(self._socket, default_timeout=self._timeout,
                                                 on_parsed=self._on_parsed)
                except ArgumentError as exc:
                    self._on_up(False)
                    raise SourceError(f"cannot reach the agent at {self._socket}: {_safe(exc)}",
                                      retryable=True, reason="unavailable") from exc
                self._client = client
                self._stream = client.stream_jwt_bundles(self._on_bundles, self._on_error)
        # Arm the local signature check before the first SVID is used: the agent sends
        # the bundles at once; if it does not within the wait, STS still checks them.
        self._first_bundles.wait(min(self._timeout, BUNDLE_WAIT))
        return client

    def _on_parsed(self, parsed: ParsedBundles) -> None:
        """Before each bundle update is applied: count and report what it skipped."""
        for reason, count in parsed.skipped.items():
            self._on_skipped(reason, count)
        with self._lock:
            changed = parsed.problems != self._bundle_problems
            self._bundle_problems = parsed.problems
        if changed and parsed.problems:
            log.warning("JWT bundles: skipped what cannot be used (%s); the rest is in use",
                        "; ".join(f"{td}: {why}" for td, why in sorted(parsed.problems.items())))

    def _on_bundles(self, bundles: JwtBundleSet) -> None:
        with self._lock:
            self._bundles = bundles
            self._bundle_error = None
        self._first_bundles.set()
        self._on_up(True)
        log.debug("JWT bundles updated")

    def _on_error(self, exc: Exception) -> None:
        # py-spiffe stops watching after a non-retryable stream error: drop the client so
        # the next fetch reconnects and starts a new watch.
        log.warning("JWT bundle stream stopped: %s", _safe(exc))
        with self._lock:
            self._client = None
            self._stream = None
            self._bundle_error = _safe(exc)
        self._first_bundles.set()  # a fetch waiting for the first bundles has its answer

    def close(self) -> None:
        with self._lock:
            stream, client = self._stream, self._client
            self._stream = self._client = None
        if stream is not None:
            stream.cancel()
        if client is not None:
            client.close()


def _classify(exc: Exception) -> SourceError:
    code = _grpc_code(exc)
    text = _safe(exc)
    if code in _PERMANENT:
        return SourceError(text, retryable=False, reason=_PERMANENT[code])
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED and "larger than max" in text:
        return SourceError(f"the agent's answer is too large: {text}", retryable=True,
                           reason="response_too_large")
    if code in _RETRYABLE:
        return SourceError(text, retryable=True, reason=_RETRYABLE[code])
    # Not a gRPC status: py-spiffe rejected the token itself (alg, typ, exp, sub, ...).
    return SourceError(f"unusable JWT-SVID from the agent: {text}", retryable=True,
                       reason="invalid_svid")


def _grpc_code(exc: BaseException) -> grpc.StatusCode | None:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, grpc.RpcError) and callable(getattr(seen, "code", None)):
            code = seen.code()
            return code if isinstance(code, grpc.StatusCode) else None
        seen = seen.__cause__ or seen.__context__
    message = str(exc)
    return next((c for c in grpc.StatusCode if f"StatusCode.{c.name}" in message), None)


@dataclass(frozen=True, slots=True)
class _Fetched:
    token: str
    spiffe_id: SpiffeId
    expiry: int
    header: dict[str, Any]
    claims: dict[str, Any]


@handle_error(error_cls=FetchJwtSvidError)
def _fetch_token(client: Any, audience: str, spiffe_id: str, timeout: float) -> str:
    """py-spiffe's FetchJWTSVID call, on its channel and with its error wrapping, but
    without its parse: that judges `exp` by this host's wall clock (see `_parse`)."""
    response = client._spiffe_workload_api_stub.FetchJWTSVID(
        workload_pb2.JWTSVIDRequest(audience=[audience], spiffe_id=spiffe_id),
        timeout=timeout)
    if len(response.svids) == 0:
        raise FetchJwtSvidError("JWT SVID response is empty")
    return str(response.svids[0].svid)


@handle_error(error_cls=FetchJwtSvidError)
def _parse(token: str, audience: str, *, now: float | None) -> _Fetched:
    """py-spiffe's `JwtSvid.parse_insecure` rules (header, required claims, audience,
    subject), with `exp` judged at `now` if given, not by time.time()."""
    if not token:
        raise ArgumentError("token cannot be empty")
    try:
        validator = JwtSvidValidator()
        header = jwt.get_unverified_header(token)
        validator.validate_header(header)
        claims = jwt.decode(token, options={"verify_signature": False})
        when = _numeric(claims.get("exp"))
        # Every rule but the clock's: py-spiffe would compare `exp` with time.time().
        validator.validate_claims(claims if when is None else {**claims, "exp": _FAR},
                                  {audience})
        if when is None:  # validate_claims refuses a missing or non-numeric exp; be sure
            raise InvalidTokenError("exp claim must be a numeric value")
        if now is not None and when <= now:
            raise TokenExpiredError()
        sub = claims.get("sub")
        if not sub:
            raise InvalidTokenError("JWT token must contain a non-empty 'sub' claim")
        return _Fetched(token=token, spiffe_id=SpiffeId(sub), expiry=int(when),
                        header=header, claims=claims)
    except jwt.PyJWTError as err:
        raise InvalidTokenError(str(err)) from err


def _numeric(value: object) -> float | None:
    """`exp` as py-spiffe reads it (a number or a numeric string), else None."""
    if not isinstance(value, (int, float, str)):
        return None
    try:
        return float(value)
    except ValueError:
        return None


def _safe(exc: BaseException) -> str:
    """py-spiffe messages carry codes and reasons; cut anything long enough to hide a token."""
    text = " ".join(str(exc).split())
    return text if len(text) <= 300 else text[:297] + "..."
