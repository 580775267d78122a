"""The issuer of the ID tokens generateIdToken mints, with its discovery and JWKS.

DEVELOPMENT ONLY. Google signs these with its own RS256 keys under
`https://accounts.google.com`; here the issuer is `<emulator url>/google`, so the AWS
STS emulator can fetch the keys over loopback and trust the tokens in GCP->AWS chains.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from bridge.devstack.gcp.service_accounts import ServiceAccount
from bridge.devstack.jwks import DISCOVERY_PATH

GOOGLE_ISSUER_PATH = "/google"
GOOGLE_DISCOVERY_PATH = GOOGLE_ISSUER_PATH + DISCOVERY_PATH
GOOGLE_CERTS_PATH = GOOGLE_ISSUER_PATH + "/oauth2/v3/certs"
ID_TOKEN_LIFETIME = 3600


class GoogleIdTokenIssuer:
    """Mints service accounts' ID tokens and publishes their key. Thread-safe.

    `base_url` gives the emulator's URL, known only once it listens.
    """

    def __init__(self, base_url: Callable[[], str]) -> None:
        self._base_url = base_url
        self._lock = threading.Lock()
        self._signing_key: tuple[str, rsa.RSAPrivateKey] | None = None

    @property
    def issuer(self) -> str:
        """`iss` of the ID tokens; serves OIDC discovery."""
        return self._base_url() + GOOGLE_ISSUER_PATH

    def mint(
        self, account: ServiceAccount, audience: str, *, include_email: bool, now: float
    ) -> str:
        """A signed ID token for `account`, as generateIdToken returns it."""
        kid, key = self._key()
        issued = int(now)
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "aud": audience,
            "azp": account.unique_id,
            "sub": account.unique_id,
            "iat": issued,
            "exp": issued + ID_TOKEN_LIFETIME,
        }
        if include_email:
            claims.update(email=account.email, email_verified=True)
        return jwt.encode(claims, key, algorithm="RS256", headers={"kid": kid, "typ": "JWT"})

    def jwks(self) -> dict[str, Any]:
        """The JWKS of the signing key (RSA, generated on first use)."""
        kid, key = self._key()
        jwk = RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
        return {"keys": [{**jwk, "kid": kid, "alg": "RS256", "use": "sig"}]}

    def discovery_document(self) -> dict[str, Any]:
        """The issuer's `/.well-known/openid-configuration`."""
        return {
            "issuer": self.issuer,
            "jwks_uri": self._base_url() + GOOGLE_CERTS_PATH,
            "response_types_supported": ["id_token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "claims_supported": ["aud", "azp", "email", "email_verified", "exp", "iat", "iss"],
        }

    def _key(self) -> tuple[str, rsa.RSAPrivateKey]:
        """Generated lazily: RSA key generation costs tens of ms per stack otherwise."""
        with self._lock:
            if self._signing_key is None:
                key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
                self._signing_key = (secrets.token_hex(20), key)
            return self._signing_key
