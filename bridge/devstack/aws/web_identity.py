"""AssumeRoleWithWebIdentity: a JWT for role credentials, checked as AWS documents.

DEVELOPMENT ONLY. moto accepts any token, so it cannot exercise the bridge's failure
handling; this action checks, in order:

1. parameters (see `params`)                                   -> ValidationError 400
2. the token is a JWS with alg RS/ES 256/384/512               -> InvalidIdentityToken 400
3. `iss` is a registered OIDC provider                        -> InvalidIdentityToken 400
4. the issuer's keys, found through its discovery document     -> IDPCommunicationError 400
5. the signature, with the key named by `kid`                  -> InvalidIdentityToken 400
6. `aud` holds one of the provider's client IDs                -> InvalidIdentityToken 400
7. integer `exp`, not in the past                              -> ExpiredTokenException 400
8. the role exists and trusts this provider, `aud` and `sub`   -> AccessDenied 403
9. DurationSeconds within the role's MaxSessionDuration        -> ValidationError 400
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bridge.devstack._http import HttpRequest
from bridge.devstack.aws.context import StsContext
from bridge.devstack.aws.documents import web_identity_result
from bridge.devstack.aws.errors import IDP_UNREACHABLE, NOT_AUTHORIZED, StsError
from bridge.devstack.aws.params import check_parameters
from bridge.devstack.aws.roles import IamDirectory, OidcProvider
from bridge.devstack.jwks import IssuerKeys, IssuerUnreachableError, signature_valid

_log = logging.getLogger(__name__)

_ALLOWED_ALGS = frozenset({"RS256", "RS384", "RS512", "ES256", "ES384", "ES512"})


@dataclass(frozen=True, slots=True)
class _ParsedToken:
    header: Mapping[str, Any]
    claims: Mapping[str, Any]


def assume_role_with_web_identity(
    context: StsContext, params: Mapping[str, str], request: HttpRequest
) -> ET.Element:
    """The action's result for these parameters.

    Raises:
        StsError: in the order given in the module docstring.
    """
    checked = check_parameters(params, web_identity=True)
    parsed = _parse_token(checked.token)
    issuer = parsed.claims.get("iss")
    provider = _provider_for(context.directory, issuer)
    _verify_signature(context.keys, checked.token, parsed, provider)
    audience = _audiences(parsed.claims.get("aud"))
    matched_aud = next((a for a in audience if a in provider.client_ids), None)
    if matched_aud is None:
        raise StsError.of("InvalidIdentityToken", "Incorrect token audience")
    _check_times(parsed.claims, int(context.clock()))
    sub = parsed.claims.get("sub")
    if not isinstance(sub, str) or not sub:
        raise StsError.of("InvalidIdentityToken", "The web identity token has no sub claim")
    role = context.directory.role(checked.role_arn)
    if role is None or role.provider_url != provider.url or not role.trusts(audience, sub):
        raise StsError.of("AccessDenied", NOT_AUTHORIZED)
    checked.check_duration(role)
    credentials = context.sessions.issue(
        role, checked.session_name, sub, expires=int(context.clock()) + checked.duration
    )
    return web_identity_result(
        credentials,
        role,
        subject=sub,
        audience=matched_aud,
        provider=str(issuer),
        packed_policy_size=checked.packed_policy_size,
    )


def _provider_for(directory: IamDirectory, issuer: object) -> OidcProvider:
    if not isinstance(issuer, str) or not issuer:
        raise StsError.of("InvalidIdentityToken", "The web identity token has no iss claim")
    provider = directory.provider(issuer)
    if provider is None:
        raise StsError.of(
            "InvalidIdentityToken",
            f"No OpenIDConnect provider found in your account for {issuer[:256]}",
        )
    return provider


def _verify_signature(
    keys: IssuerKeys, token: str, parsed: _ParsedToken, provider: OidcProvider
) -> None:
    alg = str(parsed.header["alg"])
    kid = parsed.header.get("kid")
    try:
        candidates = keys.candidates(provider.url, kid if kid is None else str(kid))
    except IssuerUnreachableError as err:
        _log.debug("sts: cannot read keys of %s: %s", provider.url, err)
        raise StsError.of("IDPCommunicationError", IDP_UNREACHABLE) from err
    if not candidates:
        raise StsError.of(
            "InvalidIdentityToken", "No key in the identity provider's JWKS matches the token"
        )
    if not signature_valid(token, alg, candidates):
        raise StsError.of("InvalidIdentityToken", "The web identity token signature is invalid")


def _check_times(claims: Mapping[str, Any], now: int) -> None:
    exp = claims.get("exp")
    # AWS rejects non-integer timestamps (SPIRE changed its output for this reason).
    if isinstance(exp, bool) or not isinstance(exp, int):
        raise StsError.of("InvalidIdentityToken", "The web identity token has no valid exp")
    if exp <= now:
        raise StsError.of(
            "ExpiredTokenException",
            f"Token expired: current date/time {now} must be before the expiration "
            f"date/time {exp}",
        )
    nbf = claims.get("nbf")
    if isinstance(nbf, int) and not isinstance(nbf, bool) and nbf > now:
        raise StsError.of("InvalidIdentityToken", "The web identity token is not yet valid")


def _b64_json(segment: str) -> Any:
    padded = segment + "=" * (-len(segment) % 4)
    return json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))


def _parse_token(token: str) -> _ParsedToken:
    """JWS compact form with an allowed alg; claims unverified."""
    parts = token.split(".")
    header: Any = None
    claims: Any = None
    if len(parts) == 3:
        try:
            header, claims = _b64_json(parts[0]), _b64_json(parts[1])
        except (ValueError, UnicodeError, binascii.Error) as err:
            raise StsError.of(
                "InvalidIdentityToken", "The web identity token is not a valid JWT"
            ) from err
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise StsError.of("InvalidIdentityToken", "The web identity token is not a valid JWT")
    alg = header.get("alg")
    if alg not in _ALLOWED_ALGS:
        raise StsError.of(
            "InvalidIdentityToken",
            f"Unsupported token signing algorithm: {str(alg)[:16]}",
        )
    return _ParsedToken(header=header, claims=claims)


def _audiences(aud: object) -> tuple[str, ...]:
    if isinstance(aud, str):
        return (aud,)
    if isinstance(aud, list):
        return tuple(a for a in aud if isinstance(a, str))
    return ()
