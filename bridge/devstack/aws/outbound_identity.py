"""sts:GetWebIdentityToken: AWS outbound identity federation. DEVELOPMENT ONLY.

A caller holding session credentials this emulator issued (the request is SigV4-signed,
`authentication`) asks for a JWT about itself for an external service: `Audience`
(1-10, `Audience.member.N`), `SigningAlgorithm` (RS256 or ES384, required),
`DurationSeconds` (60-3600, default 300), `SubjectMode` (`AWSIdentity`, the default, or
`OriginIdentity`). The account must have outbound federation enabled (`enable`), else
`OutboundWebIdentityFederationDisabledException`. The token: `iss` (this issuer),
`sub` (the caller's role ARN), `aud`, `iat`/`nbf`/`exp`, `jti`, and under
`https://sts.amazonaws.com/` the `aws_account` and `principal_id` (the role ARN).

The issuer's discovery document and JWKS are served by their own loopback server
(`OidcDiscoveryServer`, started with `start()`); real AWS gives each account an issuer
of its own (`https://<id>.tokens.sts.global.api.aws`), this emulator one for all. What
`sub` holds for a role session (the role's ARN here) is not confirmed by a public
source beyond the API reference's wording.
"""

from __future__ import annotations

import secrets
import threading
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from bridge.devstack._http import HttpRequest
from bridge.devstack.aws.authentication import authenticate
from bridge.devstack.aws.context import StsContext
from bridge.devstack.aws.documents import STS_NAMESPACE
from bridge.devstack.aws.errors import StsError
from bridge.devstack.aws.roles import account_of
from bridge.devstack.oidc import OidcDiscoveryServer

GET_WEB_IDENTITY_TOKEN = "GetWebIdentityToken"
DEFAULT_DURATION, MIN_DURATION, MAX_DURATION = 300, 60, 3600
DISABLED = "OutboundWebIdentityFederationDisabledException"
AWS_CLAIMS = "https://sts.amazonaws.com/"


class OutboundFederation:
    """The issuer of outbound web identity tokens, and which accounts may use it."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._enabled: set[str] = set()
        self._rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self._ec = ec.generate_private_key(ec.SECP384R1())
        self._kids = {"RS256": secrets.token_hex(8), "ES384": secrets.token_hex(8)}
        self.discovery = OidcDiscoveryServer(self.jwks)
        self.issued: list[str] = []  # tokens handed out, for tests; never printed

    @property
    def issuer(self) -> str:
        """`iss` of its tokens (the discovery server's URL, once started)."""
        return self.discovery.issuer

    def start(self) -> None:
        self.discovery.start()

    def stop(self) -> None:
        self.discovery.stop()

    def enable(self, account: str, enabled: bool = True) -> None:
        """EnableOutboundWebIdentityFederation (or Disable...) for an account."""
        with self._lock:
            (self._enabled.add if enabled else self._enabled.discard)(account)

    def enabled(self, account: str) -> bool:
        with self._lock:
            return account in self._enabled

    def jwks(self) -> dict[str, Any]:
        rsa_jwk = RSAAlgorithm.to_jwk(self._rsa.public_key(), as_dict=True)
        ec_jwk = ECAlgorithm.to_jwk(self._ec.public_key(), as_dict=True)
        return {"keys": [
            {"kty": "RSA", "alg": "RS256", "use": "sig", "kid": self._kids["RS256"],
             "n": rsa_jwk["n"], "e": rsa_jwk["e"]},
            {"kty": "EC", "alg": "ES384", "use": "sig", "kid": self._kids["ES384"],
             "crv": ec_jwk["crv"], "x": ec_jwk["x"], "y": ec_jwk["y"]}]}

    def mint(self, claims: Mapping[str, Any], algorithm: str) -> str:
        key = self._rsa if algorithm == "RS256" else self._ec
        token = jwt.encode(dict(claims), key, algorithm=algorithm,
                           headers={"kid": self._kids[algorithm], "typ": "JWT"})
        with self._lock:
            self.issued.append(token)
        return token


def get_web_identity_token(context: StsContext, params: Mapping[str, str],
                           request: HttpRequest) -> ET.Element:
    """The action's result for this signed request.

    Raises:
        StsError: authentication, ValidationError, or the account not enabled.
    """
    federation = context.outbound
    caller = authenticate(request, context.sessions, context.clock())
    if federation is None or not federation.enabled(account_of(caller.role_arn)):
        raise StsError(403, DISABLED, "Outbound web identity federation is not enabled for "
                       "this account")
    audiences = _members(params, "Audience")
    problems = []
    if not 1 <= len(audiences) <= 10:
        problems.append("Value at 'audience' failed to satisfy constraint: Member must have "
                        "length between 1 and 10")
    algorithm = params.get("SigningAlgorithm", "")
    if algorithm not in ("RS256", "ES384"):
        problems.append(f"Value '{algorithm}' at 'signingAlgorithm' failed to satisfy "
                        "constraint: Member must be RS256 or ES384")
    try:
        duration = int(params.get("DurationSeconds", DEFAULT_DURATION))
    except ValueError:
        duration = -1
    if not MIN_DURATION <= duration <= MAX_DURATION:
        problems.append("Value at 'durationSeconds' failed to satisfy constraint: Member "
                        f"must have value between {MIN_DURATION} and {MAX_DURATION}")
    if problems:
        raise StsError(400, "ValidationError", f"{len(problems)} validation error(s) "
                       f"detected: {'; '.join(problems)}")
    now = int(context.clock())
    account = account_of(caller.role_arn)
    claims: dict[str, Any] = {
        "iss": federation.issuer, "sub": caller.role_arn,
        "aud": audiences[0] if len(audiences) == 1 else audiences,
        "iat": now, "nbf": now, "exp": now + duration, "jti": str(uuid.uuid4()),
        AWS_CLAIMS: {"aws_account": account, "principal_id": caller.role_arn},
    }
    token = federation.mint(claims, algorithm)
    result = ET.Element(f"{GET_WEB_IDENTITY_TOKEN}Result")
    ET.SubElement(result, "WebIdentityToken").text = token
    ET.SubElement(result, "Expiration").text = datetime.fromtimestamp(
        now + duration, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return result


def _members(params: Mapping[str, str], name: str) -> list[str]:
    found: list[tuple[int, str]] = []
    prefix = f"{name}.member."
    for key, value in params.items():
        if key.startswith(prefix) and key[len(prefix):].isdigit():
            found.append((int(key[len(prefix):]), value))
    return [v for _, v in sorted(found)]


__all__ = ["GET_WEB_IDENTITY_TOKEN", "STS_NAMESPACE", "OutboundFederation",
           "get_web_identity_token"]
