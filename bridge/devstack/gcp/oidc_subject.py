"""Verifying an OIDC subject token the way Google STS does. DEVELOPMENT ONLY.

JWS with `kid`, alg RS256 or ES256, `iss` equal to the provider's issuer URI,
signature against the issuer's JWKS (discovery, or `jwks` uploaded with the provider),
`aud` in the allowed audiences (or, when none are set, the provider's resource name
with or without `https:`), `exp` in the future, `iat` not in the future (60 s leeway),
`exp - iat` under 48 h, `sub` present. Every refusal is `invalid_grant`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import jwt

from bridge.devstack.gcp.providers import OidcWorkloadProvider
from bridge.devstack.gcp.replies import StsError
from bridge.devstack.jwks import IssuerKeys, IssuerUnreachableError, Keys, signature_valid

_log = logging.getLogger(__name__)

MAX_ASSERTION_LIFETIME = 48 * 3600
IAT_LEEWAY = 60
_OIDC_ALGS = frozenset({"RS256", "ES256"})


def verify_oidc(
    provider: OidcWorkloadProvider, token: str, *, keys: IssuerKeys, clock: Callable[[], float]
) -> Mapping[str, Any]:
    """The verified claims of an OIDC subject token (see the module docstring).

    Raises:
        StsError: invalid_grant.
    """
    try:
        header = jwt.get_unverified_header(token)
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError as err:
        raise StsError("invalid_grant", "Unable to parse the ID Token.") from err
    alg = header.get("alg")
    if alg not in _OIDC_ALGS:
        raise StsError(
            "invalid_grant",
            f"Invalid ID Token: the signing algorithm {str(alg)[:16]} is not supported; "
            "use RS256 or ES256.",
        )
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise StsError("invalid_grant", "Invalid ID Token: the kid header is missing.")
    issuer = claims.get("iss")
    if issuer != provider.issuer_uri:
        raise StsError(
            "invalid_grant",
            f"The issuer in ID Token {str(issuer)[:256]} does not match the expected "
            f"ISSUER {provider.issuer_uri}.",
        )
    _check_signature(provider, token, str(alg), kid, keys)
    aud = claims.get("aud")
    audiences = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
    if not provider.accepts_audience(a for a in audiences if isinstance(a, str)):
        expected = provider.allowed_audiences or (provider.audience,)
        raise StsError(
            "invalid_grant",
            f"The audience in ID Token {audiences!r} does not match the expected audience "
            f"{', '.join(expected)}.",
        )
    _check_times(claims, clock())
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub:
        raise StsError("invalid_grant", "Invalid ID Token: the sub claim is missing.")
    return claims


def _check_signature(
    provider: OidcWorkloadProvider, token: str, alg: str, kid: str, keys: IssuerKeys
) -> None:
    candidates: Keys
    if provider.jwks is not None:  # keys uploaded to the provider: no discovery
        candidates = tuple(
            k for k in provider.jwks.get("keys", ())
            if isinstance(k, Mapping) and k.get("kid") == kid)
    else:
        try:
            candidates = keys.candidates(provider.issuer_uri, kid)
        except IssuerUnreachableError as err:
            _log.debug("gcp sts: cannot read keys of %s: %s", provider.issuer_uri, err)
            raise StsError("invalid_grant", "Unable to fetch the JWKS of the issuer "
                           f"{provider.issuer_uri[:256]}.") from err
    if not candidates:
        raise StsError(
            "invalid_grant", f"Invalid ID Token: no key with kid {kid[:64]} in the JWKS."
        )
    if not signature_valid(token, alg, candidates):
        raise StsError("invalid_grant", "Invalid ID Token: the signature is invalid.")


def _numeric_claim(claims: Mapping[str, Any], name: str) -> float:
    value = claims.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise StsError("invalid_grant", f"Invalid ID Token: the {name} claim is missing.")
    return float(value)


def _check_times(claims: Mapping[str, Any], now: float) -> None:
    exp, iat = _numeric_claim(claims, "exp"), _numeric_claim(claims, "iat")
    if exp <= now:
        raise StsError("invalid_grant", f"The ID Token has expired (exp {int(exp)}).")
    if iat > now + IAT_LEEWAY:
        raise StsError("invalid_grant", "Invalid ID Token: iat is in the future.")
    if exp - iat >= MAX_ASSERTION_LIFETIME:
        raise StsError(
            "invalid_grant", "Invalid ID Token: the lifetime (exp - iat) must be under 48 hours."
        )
