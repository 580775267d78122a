"""The client-credentials grant with a federated client assertion, checked as Entra
checks it. DEVELOPMENT ONLY.

In order: the tenant (AADSTS90002), the grant type (70003), the application (700016,
7000112 disabled), the scope (one resource's `/.default`: 1002012, 70011; a known
resource: 500011), the assertion's presence and type (7000218) and shape (50027); then
the app's federated credentials, matched exactly: `iss` (700211), `sub` (700213),
`aud` (700212); the issuer's keys by OIDC discovery and JWKS (7000272: `kid` not
published; 700027: bad signature); the validity window, `exp`/`nbf` with five minutes of
leeway (700024). The code the emulator gives an issuer it cannot reach (7000274) is its
own choice: no public source confirms Entra's.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import jwt

from bridge.devstack.azure.directory import Directory, FederatedCredential, Resource
from bridge.devstack.azure.replies import EntraError
from bridge.devstack.azure.tokens import EntraTokenIssuer
from bridge.devstack.jwks import IssuerKeys, IssuerUnreachableError, signature_valid

JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
LEEWAY = 300
_ALGS = ("RS256", "RS384", "RS512", "ES256", "ES384", "PS256", "PS384", "PS512")


@dataclass(frozen=True, slots=True)
class GrantContext:
    directory: Directory
    keys: IssuerKeys
    issuer: EntraTokenIssuer
    clock: Callable[[], float]
    lifetime: Callable[[], int | None] = lambda: None  # a fixed lifetime, else Entra's


def client_credentials(ctx: GrantContext, tenant_id: str,
                       form: Mapping[str, str]) -> dict[str, Any]:
    """The token response for a valid request; raises EntraError otherwise."""
    tenant = ctx.directory.tenant(tenant_id)
    if tenant is None:
        raise EntraError("invalid_request", 90002, f"Tenant '{tenant_id}' not found. Check "
                         "to make sure you have the correct tenant ID and are signing into "
                         "the correct cloud.")
    if form.get("grant_type") != "client_credentials":
        raise EntraError("unsupported_grant_type", 70003, "The app requested an unsupported "
                         "grant type.")
    client_id = form.get("client_id", "")
    app = tenant.apps.get(client_id)
    if app is None:
        raise EntraError("unauthorized_client", 700016, f"Application with identifier "
                         f"'{client_id}' was not found in the directory '{tenant_id}'.")
    if not app.enabled:
        raise EntraError("unauthorized_client", 7000112, f"Application '{client_id}' is "
                         "disabled.")
    resource = _resource(tenant.resources, form.get("scope", ""))
    assertion = form.get("client_assertion", "")
    if form.get("client_assertion_type") != JWT_BEARER or not assertion:
        raise EntraError("invalid_client", 7000218, "The request body must contain the "
                         "following parameter: 'client_assertion' or 'client_secret'.")
    header, claims = _unverified(assertion)
    _match(ctx.directory.federated(tenant_id, client_id), claims)
    _verify(ctx.keys, assertion, header, str(claims.get("iss")))
    _window(claims, ctx.clock())
    token, expires_in = ctx.issuer.issue(tenant_id, app, resource, subject=str(claims["sub"]),
                                         lifetime=ctx.lifetime())
    return {"token_type": "Bearer", "expires_in": expires_in, "ext_expires_in": expires_in,
            "access_token": token}


def _resource(resources: Mapping[str, Resource], scope: str) -> Resource:
    parts = scope.split()
    if not parts or not all(p.endswith("/.default") for p in parts):
        raise EntraError("invalid_scope", 1002012, f"The provided value for scope {scope} is "
                         "not valid. Client credential flows must have a scope value with "
                         "/.default suffixed to the resource identifier (application ID URI).")
    if len(parts) > 1:
        raise EntraError("invalid_scope", 70011, f"The provided value for the input "
                         f"parameter 'scope' is not valid. The scope {scope} is not valid.")
    uri = parts[0].removesuffix("/.default")
    if uri not in resources:
        raise EntraError("invalid_resource", 500011, f"The resource principal named {uri} "
                         "was not found in the tenant. This can happen if the application "
                         "has not been installed by the administrator of the tenant.")
    return resources[uri]


def _unverified(assertion: str) -> tuple[dict[str, Any], dict[str, Any]]:
    try:
        header = jwt.get_unverified_header(assertion)
        claims = jwt.decode(assertion, options={"verify_signature": False})
    except jwt.PyJWTError:
        raise EntraError("invalid_request", 50027, "JWT token is invalid or malformed.") \
            from None
    if not all(isinstance(claims.get(c), str) for c in ("iss", "sub")):
        raise EntraError("invalid_request", 50027, "JWT token is invalid or malformed.")
    return header, claims


def _match(credentials: tuple[FederatedCredential, ...], claims: Mapping[str, Any]) -> None:
    iss, sub = claims["iss"], claims["sub"]
    aud = claims.get("aud")
    audiences = [aud] if isinstance(aud, str) else list(aud or [])
    by_issuer = [c for c in credentials if c.issuer == iss]
    if not by_issuer:
        raise EntraError("invalid_client", 700211, "No matching federated identity record "
                         f"found for presented assertion issuer '{iss}'. Please check your "
                         "federated identity credential Subject, Audience and Issuer "
                         "against the presented assertion.")
    by_subject = [c for c in by_issuer if c.subject == sub]
    if not by_subject:
        raise EntraError("invalid_client", 700213, "No matching federated identity record "
                         f"found for presented assertion subject '{sub}'. Please check your "
                         "federated identity credential Subject, Audience and Issuer "
                         "against the presented assertion.")
    if not any(c.audience in audiences for c in by_subject):
        raise EntraError("invalid_client", 700212, "No matching federated identity record "
                         f"found for presented assertion audience '{', '.join(audiences)}'. "
                         "Please check your federated identity credential Subject, Audience "
                         "and Issuer against the presented assertion.")


def _verify(keys: IssuerKeys, assertion: str, header: Mapping[str, Any], issuer: str) -> None:
    alg = str(header.get("alg", ""))
    kid = header.get("kid")
    try:
        candidates = keys.candidates(issuer, str(kid) if kid is not None else None)
    except IssuerUnreachableError:
        raise EntraError("invalid_client", 7000274, "Unable to obtain the metadata of "
                         f"identity provider {issuer} to validate the federated credential.") \
            from None
    if not candidates:
        raise EntraError("invalid_client", 7000272, f"The certificate with identifier {kid} "
                         "used to sign the federated credential could not be found in the "
                         f"metadata of identity provider {issuer}.")
    if alg not in _ALGS or not signature_valid(assertion, alg, candidates):
        raise EntraError("invalid_client", 700027, "Client assertion failed signature "
                         "validation.")


def _window(claims: Mapping[str, Any], now: float) -> None:
    exp, nbf = claims.get("exp"), claims.get("nbf", claims.get("iat"))
    if not isinstance(exp, int | float):
        raise EntraError("invalid_request", 50027, "JWT token is invalid or malformed.")
    if now > exp + LEEWAY or (isinstance(nbf, int | float) and now < nbf - LEEWAY):
        raise EntraError("invalid_client", 700024, "Client assertion is not within its "
                         f"valid time range. Current time: {_iso(now)}, assertion valid from "
                         f"{_iso(nbf) if isinstance(nbf, int | float) else '-'}, expiry time "
                         f"of assertion {_iso(exp)}.")


def _iso(epoch: float) -> str:
    import datetime

    return datetime.datetime.fromtimestamp(epoch, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S")
