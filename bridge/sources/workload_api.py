"""JWT-SVIDs from the SPIFFE Workload API, through py-spiffe.

py-spiffe raises at construction when the agent socket does not exist yet, does not
retry unary calls, and checks no signature on fetch; this adapter adds what the daemon
needs on top: lazy (re)connection, a deadline on every call, the spec's retry
classification, an expiry margin, and a local signature check against the JWT bundles
it watches on the bundle stream.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
import jwt
from spiffe import JwtBundleSet, SpiffeId, TrustDomain, WorkloadApiClient
from spiffe._proto import workload_pb2
from spiffe.bundle.jwt_bundle.errors import AuthorityNotFoundError
from spiffe.errors import ArgumentError, PySpiffeError
from spiffe.svid.errors import InvalidTokenError, TokenExpiredError
from spiffe.svid.jwt_svid_validator import JwtSvidValidator
from spiffe.workloadapi.errors import FetchJwtSvidError
from spiffe.workloadapi.handle_error import handle_error

from bridge.errors import SourceError
from bridge.model import JwtSvid

log = logging.getLogger(__name__)
BUNDLE_WAIT = 2.0  # seconds a first fetch waits for the first bundle message
# STS's WebIdentityToken limit; SPIRE's JWT-SVIDs are well under 1 KiB.
MAX_SVID_LENGTH = 20_000
_FAR = 2**40  # an `exp` no clock reaches: py-spiffe's own check passes it
LEEWAY = 60.0  # seconds of clock skew allowed on `iat`/`nbf` (go-jose's default leeway)
# JWS Compact Serialization: three base64url segments without padding (RFC 7515 §2, §7.1);
# PyJWT also decodes padded or whitespace-laden tokens that go-jose (hence STS) refuses.
_COMPACT_JWS = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+", re.ASCII)

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
    ) -> None:
        self._socket = socket
        self._timeout = timeout
        self._min_remaining = min_remaining
        self._now = now
        self._monotonic = monotonic
        self._cloud_now = cloud_now
        self._on_up = on_up or (lambda _up: None)
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
            # known; then the expiry margin below judges by that clock instead.
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

    def _check(self, fetched: Any, audience: str, spiffe_id: str | None,
               judge: str | None) -> JwtSvid:
        token = str(fetched.token)
        if len(token) > MAX_SVID_LENGTH:
            raise SourceError(f"JWT-SVID is {len(token)} characters, over the "
                              f"{MAX_SVID_LENGTH} STS accepts", retryable=True,
                              reason="invalid_svid")
        if not _COMPACT_JWS.fullmatch(token):
            raise SourceError("unusable JWT-SVID from the agent: not a JWS compact "
                              "serialization (three unpadded base64url segments)",
                              retryable=True, reason="invalid_svid")
        _check_header(token)
        claims = _claims(token)
        now, mono = self._now(), self._monotonic()
        # The token's times are the SPIRE server's: judge them by the clouds' clock when
        # it is known (it rides the monotonic clock, so a stepped host clock is no matter).
        issuer_now = self._cloud_now(judge) or now
        # `iat`/`nbf` are the SPIRE server's clock: in step with this host or with the
        # clouds (NTP), we cannot tell which; only a time ahead of both is refused.
        _check_claims(claims, audience=audience, spiffe_id=spiffe_id, now=max(now, issuer_now))
        left = float(fetched.expiry) - issuer_now
        if left < self._min_remaining:
            raise SourceError(
                f"JWT-SVID for {fetched.spiffe_id} expires in {left:.0f}s, less than the "
                f"{self._min_remaining:.0f}s margin (agent cache past its life?)",
                retryable=True, reason="svid_expiring")
        self._verify_locally(token, fetched.spiffe_id, audience)
        issued = claims.get("iat")
        issued_at = now - (issuer_now - issued) if isinstance(issued, int) else now
        return JwtSvid(spiffe_id=str(fetched.spiffe_id), audience=audience,
                       expires_at=now + left, issued_at=issued_at, token=token,
                       deadline=mono + left)

    def _verify_locally(self, token: str, spiffe_id: Any, audience: str) -> None:
        with self._lock:
            bundles, error = self._bundles, self._bundle_error
        if bundles is None and error is not None:
            raise SourceError(f"the agent's JWT bundles are unusable ({error}); an SVID "
                              "that cannot be verified is not sent", retryable=True,
                              reason="invalid_bundle")
        if bundles is None:
            return  # no bundle yet: the cloud's STS still verifies the signature
        td: TrustDomain = spiffe_id.trust_domain
        bundle = bundles.get_bundle_for_trust_domain(td)
        if bundle is None:
            raise SourceError(f"no JWT bundle for trust domain {td}", retryable=True,
                              reason="invalid_svid")
        try:
            _verify_signature(token, bundle, audience)
        except (PySpiffeError, jwt.PyJWTError) as exc:
            raise SourceError(f"JWT-SVID failed local validation: {_safe(exc)}",
                              # Hidden: token validation errors may quote claims.
                              retryable=True, reason="invalid_svid") from None

    def _connect(self) -> Any:
        with self._lock:
            client = self._client
            if client is None:
                try:
                    client = WorkloadApiClient(self._socket, default_timeout=self._timeout)
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


def _check_header(token: str) -> None:
    """JWT-SVID §2: only `alg`, `kid` and `typ`, and `typ` (if present) JWT or JOSE;
    py-spiffe lets an empty `typ` and any other parameter (crit, jku, x5u...) through."""
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        header = {}
    extra = sorted(str(k) for k in header if k not in {"alg", "kid", "typ"})
    if extra:
        raise SourceError("unusable JWT-SVID from the agent: header parameters "
                          f"{', '.join(extra)[:100]} are not allowed in a JWT-SVID",
                          retryable=True, reason="invalid_svid")
    if "typ" in header and header["typ"] not in ("JWT", "JOSE"):
        raise SourceError("unusable JWT-SVID from the agent: typ must be JWT or JOSE",
                          retryable=True, reason="invalid_svid")


def _check_claims(claims: dict[str, Any], *, audience: str, spiffe_id: str | None,
                  now: float) -> None:
    """What py-spiffe's parse leaves unchecked: the identity asked for, one audience only
    (a multi-audience token can be replayed), and integer times (AWS refuses others)."""
    def bad(message: str) -> SourceError:
        return SourceError(f"unusable JWT-SVID from the agent: {message}", retryable=True,
                           reason="invalid_svid")

    sub = claims.get("sub")
    try:
        canonical = isinstance(sub, str) and str(SpiffeId(sub)) == sub
    except PySpiffeError:
        canonical = False
    if not canonical:
        raise bad("sub is not a canonical SPIFFE ID")
    if spiffe_id is not None and sub != spiffe_id:
        raise bad(f"sub is {sub}, not the requested {spiffe_id}")
    aud = claims.get("aud")
    if aud not in (audience, [audience]):
        raise bad(f"aud must be exactly [{audience!r}]")
    for name in ("exp", "iat", "nbf"):
        value = claims.get(name)
        if (value is not None or name == "exp") and (
                isinstance(value, bool) or not isinstance(value, int)):
            raise bad(f"{name} is not an integer NumericDate")
    for name in ("iat", "nbf"):
        value = claims.get(name)
        if isinstance(value, int) and value > now + LEEWAY:
            raise bad(f"{name} is {value - int(now)}s in the future (or this host's "
                      "clock is behind the SPIRE server's: check NTP)")


@dataclass(frozen=True, slots=True)
class _Fetched:
    token: str
    spiffe_id: SpiffeId
    expiry: int


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
        validator.validate_header(jwt.get_unverified_header(token))
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
        return _Fetched(token=token, spiffe_id=SpiffeId(sub), expiry=int(when))
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


def _verify_signature(token: str, bundle: Any, audience: str) -> None:
    """py-spiffe's checks of header, key and signature, and the audience, but no time
    claim: its parse judges `exp` by this host's wall clock, which may be wrong;
    `_check_claims` and the expiry margin judge times by the issuer's clock."""
    header = jwt.get_unverified_header(token)
    JwtSvidValidator().validate_header(header)  # alg and typ, py-spiffe's own rule
    kid = header.get("kid")
    key = bundle.get_jwt_authority(kid)  # py-spiffe refuses a missing or empty kid
    if key is None:
        raise AuthorityNotFoundError(str(kid)[:64])
    jwt.decode(token, key=key, algorithms=[header["alg"]], audience=audience,
               options={"verify_exp": False, "verify_iat": False, "verify_nbf": False,
                        "require": ["aud", "exp", "sub"]})


def _claims(token: str) -> dict[str, Any]:
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        return {}
    return claims if isinstance(claims, dict) else {}


def _safe(exc: BaseException) -> str:
    """py-spiffe messages carry codes and reasons; cut anything long enough to hide a token."""
    text = " ".join(str(exc).split())
    return text if len(text) <= 300 else text[:297] + "..."
