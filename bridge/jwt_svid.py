"""One JWT-SVID validator, for the bridge's own SVIDs and for gRPC callers alike.

py-spiffe checks alg, kid, signature, `aud` ⊇ ours and `exp` against this host's wall
clock, and nothing else: an `iat` ten years ahead, an `exp` a century ahead or an `exp`
written as a string pass. Here every rule is applied to both kinds of token, and time is
judged by the clock the caller passes in (the sources pass the clouds' clock, which
rides the monotonic clock; a local wall clock that is wrong must not decide):

- JWS compact serialization (three unpadded base64url segments), at most 16 KiB;
- header: only `alg` (an asymmetric JOSE algorithm), `kid` and `typ` (JWT or JOSE);
- `sub` a canonical SPIFFE ID (and the one asked for, when asked), `aud` exactly ours
  (a token for several audiences can be replayed by any of them);
- `exp` an integer NumericDate, in the future, and at most `MAX_AHEAD` beyond now;
- `iat`/`nbf`, when present, integers at most `LEEWAY` in the future;
- the signature, by the key named by `kid` in the subject's trust-domain bundle.
"""

from __future__ import annotations

import re
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import dsa
from spiffe import JwtBundleSet, SpiffeId
from spiffe.errors import PySpiffeError

MAX_TOKEN_LENGTH = 16 * 1024
LEEWAY = 60.0  # seconds of clock skew allowed on `iat`/`nbf` (go-jose's default leeway)
# SPIRE's JWT-SVIDs live minutes (default 5 min); a day ahead is a forged or broken token.
MAX_AHEAD = 24 * 3600.0
ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "ES256", "ES384", "ES512",
                        "PS256", "PS384", "PS512"})
# JWS Compact Serialization: three base64url segments without padding (RFC 7515 §2, §7.1);
# PyJWT also decodes padded or whitespace-laden tokens that go-jose (hence STS) refuses.
_COMPACT_JWS = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+", re.ASCII)


class InvalidSvidError(ValueError):
    """The token is not a JWT-SVID we accept; the message never quotes the token."""

    def __init__(self, message: str, *, no_bundle: bool = False, expired: bool = False,
                 unknown_key: bool = False) -> None:
        super().__init__(message)
        self.unknown_key = unknown_key  # no key under its kid in the bundle
        self.no_bundle = no_bundle  # no bundle for the subject's trust domain
        self.expired = expired  # well-formed, but `exp` has passed


def check_shape(token: str, *, header: dict[str, Any] | None = None) -> dict[str, Any]:
    """Size, compact serialization and header; returns the header. `header`: the
    token's, decoded already by the caller (it is judged, not decoded again)."""
    if len(token) > MAX_TOKEN_LENGTH:
        raise InvalidSvidError(f"the JWT-SVID is {len(token)} characters, over "
                               f"{MAX_TOKEN_LENGTH}")
    if not _COMPACT_JWS.fullmatch(token):
        raise InvalidSvidError("not a JWS compact serialization (three unpadded base64url "
                               "segments)")
    if header is None:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise InvalidSvidError("the JOSE header is not valid") from None
    extra = sorted(str(k) for k in header if k not in {"alg", "kid", "typ"})
    if extra:
        raise InvalidSvidError(f"header parameters {', '.join(extra)[:100]} are not allowed "
                               "in a JWT-SVID")
    if "typ" in header and header["typ"] not in ("JWT", "JOSE"):
        raise InvalidSvidError("typ must be JWT or JOSE")
    if header.get("alg") not in ALGORITHMS:
        raise InvalidSvidError("alg is not an asymmetric JOSE algorithm a JWT-SVID may use")
    return header


def unverified_claims(token: str) -> dict[str, Any]:
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        raise InvalidSvidError("the claims are not a JSON object") from None
    if not isinstance(claims, dict):
        raise InvalidSvidError("the claims are not a JSON object")
    return claims


def check_claims(claims: dict[str, Any], *, audience: str, now: float,
                 spiffe_id: str | None = None, issuer_now: float | None = None) -> None:
    """The claim rules above, time judged by `now` (seconds since the epoch on the clock
    the caller trusts). `issuer_now`: another clock the issuer may keep (this host's,
    when `now` is the clouds'): `iat`/`nbf` ahead of both are refused, not of either
    (a SPIRE server in step with this host or with the clouds, we cannot tell which)."""
    sub = claims.get("sub")
    try:
        canonical = isinstance(sub, str) and str(SpiffeId(sub)) == sub
    except PySpiffeError:
        canonical = False
    if not canonical:
        raise InvalidSvidError("sub is not a canonical SPIFFE ID")
    if spiffe_id is not None and sub != spiffe_id:
        raise InvalidSvidError(f"sub is {sub}, not the requested {spiffe_id}")
    if claims.get("aud") not in (audience, [audience]):
        raise InvalidSvidError(f"aud must be exactly [{audience!r}]")
    for name in ("exp", "iat", "nbf"):
        value = claims.get(name)
        if (value is not None or name == "exp") and (
                isinstance(value, bool) or not isinstance(value, int)):
            raise InvalidSvidError(f"{name} is not an integer NumericDate")
    latest = max(now, issuer_now) if issuer_now is not None else now
    for name in ("iat", "nbf"):
        value = claims.get(name)
        if isinstance(value, int) and value > latest + LEEWAY:
            raise InvalidSvidError(f"{name} is {_ahead(value, latest)} in the future (or "
                                   "this host's clock is behind the issuer's: check NTP)")
    exp = int(claims["exp"])
    if exp <= now:
        raise InvalidSvidError("the JWT-SVID has expired", expired=True)
    if exp > now + MAX_AHEAD + LEEWAY:
        raise InvalidSvidError(f"exp is {_ahead(exp, now)} ahead, more than the "
                               f"{MAX_AHEAD / 3600:.0f}h a JWT-SVID may live")


def verify_signature(token: str, header: dict[str, Any], sub: str,
                     bundles: JwtBundleSet) -> None:
    """The signature, by the key `kid` names in the bundle of `sub`'s trust domain (no
    time check here: `check_claims` judges time by the clock it is given)."""
    trust_domain = SpiffeId(sub).trust_domain
    bundle = bundles.get_bundle_for_trust_domain(trust_domain)
    if bundle is None:
        raise InvalidSvidError(f"no JWT bundle for trust domain {trust_domain}",
                               no_bundle=True)
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise InvalidSvidError("key_id cannot be empty",  # py-spiffe's words, as below
                               unknown_key=True)
    key = bundle.get_jwt_authority(kid)
    if key is None:
        raise InvalidSvidError(f"Authority not found for key ID: {str(kid)[:64]}",
                               unknown_key=True)
    if isinstance(key, dsa.DSAPublicKey):  # no JOSE algorithm signs with DSA
        raise InvalidSvidError("Signature verification failed")
    try:
        jwt.decode(token, key=key, algorithms=[str(header["alg"])], options={
            "verify_signature": True, "verify_exp": False, "verify_nbf": False,
            "verify_iat": False, "verify_aud": False, "verify_iss": False})
    except jwt.PyJWTError:
        raise InvalidSvidError("Signature verification failed") from None
    except (TypeError, ValueError):  # a key of the wrong type for alg
        raise InvalidSvidError("Signature verification failed") from None


def validate(token: str, *, audience: str, now: float, bundles: JwtBundleSet | None,
             spiffe_id: str | None = None) -> dict[str, Any]:
    """Every rule, in order; the signature only when `bundles` is given. Returns the
    claims. Raises InvalidSvidError."""
    header = check_shape(token)
    claims = unverified_claims(token)
    check_claims(claims, audience=audience, now=now, spiffe_id=spiffe_id)
    if bundles is not None:
        verify_signature(token, header, str(claims["sub"]), bundles)
    return claims


def _ahead(value: int, now: float) -> str:
    seconds = value - int(now)
    return f"{seconds}s" if seconds < 86400 else f"{seconds // 86400} days"
