"""Who is calling: a caller's own JWT-SVID, checked against the JWT bundles we watch.

A caller sends `authorization: Bearer <JWT-SVID>`. The token must pass the same
validator as the bridge's own SVIDs (`bridge.jwt_svid`: signed by a key in the bundle of
its subject's trust domain, exactly our audience, integer times, not expired, not issued
in the future, `exp` at most a day ahead). Verified tokens are
cached by digest until their expiry or the next bundle change, so a caller that sends
the same SVID on every call pays for one signature check, and a revoked key stops
validating as soon as the agent drops it from the bundle.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable

from spiffe import JwtBundleSet

from bridge import jwt_svid

MAX_TOKEN_BYTES = 16 * 1024
CACHE_SIZE = 1024


class CallerRejected(Exception):  # noqa: N818 - a verdict, not a malfunction
    """The caller could not be authenticated; `unavailable` means "not yet" (no bundle)."""

    def __init__(self, message: str, *, unavailable: bool = False) -> None:
        super().__init__(message)
        self.unavailable = unavailable


class CallerVerifier:
    """Verifies callers' JWT-SVIDs against the watched bundles, with a verdict cache."""

    def __init__(self, bundles: Callable[[], JwtBundleSet | None], *, audience: str,
                 now: Callable[[], float]) -> None:
        self._bundles = bundles
        self._audience = audience
        self._now = now
        self._lock = threading.Lock()
        self._cache: OrderedDict[bytes, tuple[str, float]] = OrderedDict()
        self._cache_bundles: object = None

    @property
    def audience(self) -> str:
        return self._audience

    def verify(self, token: str) -> str:
        """Return the caller's SPIFFE ID, or raise CallerRejected saying why."""
        if not token:
            raise CallerRejected("no JWT-SVID: send `authorization: Bearer <JWT-SVID>` for "
                                 f"audience {self._audience!r}")
        if len(token) > MAX_TOKEN_BYTES:
            raise CallerRejected("the JWT-SVID is larger than 16 KiB")
        bundles = self._bundles()
        if bundles is None:
            raise CallerRejected("no JWT bundle from the Workload API yet to verify callers "
                                 "with", unavailable=True)
        key = hashlib.sha256(token.encode()).digest()
        hit = self._cached(key, bundles)
        if hit is not None:
            return hit
        spiffe_id, expires_at = self._validate(token, bundles)
        with self._lock:
            self._cache[key] = (spiffe_id, expires_at)
            while len(self._cache) > CACHE_SIZE:
                self._cache.popitem(last=False)
        return spiffe_id

    def _cached(self, key: bytes, bundles: JwtBundleSet) -> str | None:
        with self._lock:
            if bundles is not self._cache_bundles:  # keys rotated or revoked: check again
                self._cache.clear()
                self._cache_bundles = bundles
                return None
            hit = self._cache.get(key)
            if hit is None:
                return None
            if hit[1] <= self._now():
                del self._cache[key]
                return None
            self._cache.move_to_end(key)
            return hit[0]

    def _validate(self, token: str, bundles: JwtBundleSet) -> tuple[str, float]:
        """The one JWT-SVID validator the bridge's own SVIDs pass too (`bridge.jwt_svid`),
        time judged by this verifier's clock."""
        try:
            claims = jwt_svid.validate(token, audience=self._audience, now=self._now(),
                                       bundles=bundles)
        # Hidden causes below: parse errors of a caller's token may quote its claims.
        except jwt_svid.InvalidSvidError as exc:
            if exc.no_bundle:
                raise CallerRejected(f"{exc}: the caller's SVID is not from a trusted "
                                     "domain") from None
            raise CallerRejected(f"invalid JWT-SVID: {exc}") from None
        except Exception:
            raise CallerRejected("invalid JWT-SVID: malformed token") from None
        return str(claims["sub"]), float(claims["exp"])


def allows(pattern: str, caller: str) -> bool:
    """Whether `caller` (a SPIFFE ID) matches one `allowed_callers` entry: exact, or a
    trailing `/*` for every ID under that path (never the path itself)."""
    if pattern.endswith("/*"):
        return caller.startswith(pattern[:-1]) and len(caller) > len(pattern) - 1
    return caller == pattern


def bearer(metadata: object) -> str:
    """The token from `authorization: Bearer <token>` in gRPC invocation metadata."""
    if not metadata:
        return ""
    for key, value in metadata:  # type: ignore[attr-defined]
        if key == "authorization" and isinstance(value, str):
            return bearer_value(value)
    return ""


def bearer_value(value: str | None) -> str:
    """The token of an `Authorization: Bearer <token>` value ("" for any other)."""
    scheme, _, token = (value or "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""
