"""The access tokens the Entra emulator issues, in Entra's shape. DEVELOPMENT ONLY.

RS256 with a `kid` (and `x5t`-less JWKS at `/<tenant>/discovery/v2.0/keys`, as Entra
publishes), lifetimes drawn from 60-90 minutes (Entra's default for access tokens).
Claims of an app-only token: `aud` (the resource), `iss`, `iat`/`nbf`/`exp`, `appid`
(v1) or `azp` (v2), `appidacr`/`azpacr` = 2 (a client assertion), `idp`, `idtyp: app`,
`oid` = `sub` (the service principal), `tid`, `uti`, `ver`. Version 1 tokens (Azure
Storage, most Azure APIs) carry `iss = https://sts.windows.net/<tenant>/`; version 2
ones `<authority>/<tenant>/v2.0`, whose discovery the emulator serves (what AWS and
GCP fetch when they trust Entra as an OIDC issuer).
"""

from __future__ import annotations

import base64
import secrets
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from bridge.devstack.azure.directory import App, Resource

MIN_LIFETIME, MAX_LIFETIME = 3600, 5400


def v1_issuer(tenant_id: str) -> str:
    """`iss` of version 1 tokens (what Azure Storage, and so Azurite, accepts)."""
    return f"https://sts.windows.net/{tenant_id}/"


@dataclass(frozen=True, slots=True)
class EntraToken:
    """One issued token; `access_token` never printed."""

    access_token: str = field(repr=False)
    tenant_id: str
    client_id: str
    resource: str
    subject: str  # the assertion's sub it was exchanged for
    expires_at: float


class EntraTokenIssuer:
    """Signs tokens for every tenant with one RSA key (Entra's keys are common too)."""

    def __init__(self, authority: Callable[[], str], clock: Callable[[], float]) -> None:
        self._authority = authority
        self._clock = clock
        self._lock = threading.Lock()
        self._key: rsa.RSAPrivateKey | None = None
        self._kid = base64.urlsafe_b64encode(secrets.token_bytes(20)).decode().rstrip("=")
        self._issued: list[EntraToken] = []
        self._rng = secrets.SystemRandom()

    def _signing_key(self) -> rsa.RSAPrivateKey:
        with self._lock:
            if self._key is None:
                self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            return self._key

    def jwks(self) -> dict[str, Any]:
        jwk = RSAAlgorithm.to_jwk(self._signing_key().public_key(), as_dict=True)
        return {"keys": [{"kty": "RSA", "use": "sig", "kid": self._kid, "n": jwk["n"],
                          "e": jwk["e"]}]}

    def v2_issuer(self, tenant_id: str) -> str:
        return f"{self._authority()}/{tenant_id}/v2.0"

    def issue(self, tenant_id: str, app: App, resource: Resource, *, subject: str,
              lifetime: int | None = None) -> tuple[str, int]:
        """(access token, expires_in)."""
        now = int(self._clock())
        life = lifetime or self._rng.randint(MIN_LIFETIME, MAX_LIFETIME)
        claims: dict[str, Any] = {
            "aud": resource.uri, "iat": now, "nbf": now, "exp": now + life,
            "idtyp": "app", "oid": app.object_id, "sub": app.object_id, "tid": tenant_id,
            "uti": base64.urlsafe_b64encode(secrets.token_bytes(16)).decode().rstrip("="),
            "rh": "0.dev", "aio": str(uuid.uuid4()),
        }
        if resource.version == 2:
            claims |= {"iss": self.v2_issuer(tenant_id), "azp": app.client_id, "azpacr": "2",
                       "ver": "2.0"}
        else:
            claims |= {"iss": v1_issuer(tenant_id), "idp": v1_issuer(tenant_id),
                       "appid": app.client_id, "appidacr": "2", "ver": "1.0"}
        token = jwt.encode(claims, self._signing_key(), algorithm="RS256",
                           headers={"kid": self._kid, "typ": "JWT"})
        with self._lock:
            self._issued.append(EntraToken(token, tenant_id, app.client_id, resource.uri,
                                           subject, float(now + life)))
        return token, life

    @property
    def issued(self) -> tuple[EntraToken, ...]:
        with self._lock:
            return tuple(self._issued)

    def whoami(self, token: str) -> EntraToken | None:
        with self._lock:
            return next((t for t in self._issued if t.access_token == token), None)
