"""Forged JWT-SVIDs for fault injection: any header, any claims, any key, any bytes.

PyJWT refuses to *encode* some malformed headers (a non-string `kid`), so tokens are
assembled by hand here and signed with the raw key when a signature is wanted.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm

from bridge.devstack import JwtAuthority

DROP: Any = object()
"""Pass as a claim or header value to leave that member out."""


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64json(doc: object) -> str:
    return b64url(json.dumps(doc).encode())


class Forge:
    """Builds tokens shaped like the authority's, with the requested defects."""

    def __init__(self, authority: JwtAuthority) -> None:
        self.authority = authority
        self._rsa: rsa.RSAPrivateKey | None = None

    @property
    def rsa_key(self) -> rsa.RSAPrivateKey:
        if self._rsa is None:
            self._rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        return self._rsa

    def claims(self, sub: str, aud: str, /, **changes: Any) -> dict[str, Any]:
        now = int(time.time())
        claims: dict[str, Any] = {"sub": sub, "aud": [aud], "exp": now + 300, "iat": now}
        if self.authority.issuer:
            claims["iss"] = self.authority.issuer
        for name, value in changes.items():
            if value is DROP:
                claims.pop(name, None)
            else:
                claims[name] = value
        return claims

    def header(self, **changes: Any) -> dict[str, Any]:
        header: dict[str, Any] = {"alg": "ES256", "typ": "JWT", "kid": self.authority.active_kid}
        for name, value in changes.items():
            if value is DROP:
                header.pop(name, None)
            else:
                header[name] = value
        return header

    def es256(self, claims: dict[str, Any], header: dict[str, Any] | None = None,
              key: ec.EllipticCurvePrivateKey | None = None) -> str:
        """Compact JWS signed with ES256 (by the active key unless `key`), header as given."""
        signing_input = f"{b64json(header or self.header())}.{b64json(claims)}"
        signer = key or self.authority.active_key.private_key
        signature = ECAlgorithm(ECAlgorithm.SHA256).sign(signing_input.encode(), signer)
        return f"{signing_input}.{b64url(signature)}"

    def token(self, sub: str, aud: str, /, *, header: dict[str, Any] | None = None,
              **claims: Any) -> str:
        return self.es256(self.claims(sub, aud, **claims), header)

    def rs256_unknown_kid(self, sub: str, aud: str) -> str:
        return jwt.encode(self.claims(sub, aud), self.rsa_key, algorithm="RS256",
                          headers={"kid": "not-in-the-bundle", "typ": "JWT"})

    def hs256(self, sub: str, aud: str) -> str:
        """HMAC "signed" with the public key as the secret: the classic alg confusion."""
        secret = json.dumps(self.authority.active_key.public_jwk()).encode()
        signing_input = (f"{b64json(self.header(alg='HS256'))}."
                         f"{b64json(self.claims(sub, aud))}")
        mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
        return f"{signing_input}.{b64url(mac)}"

    def unsigned(self, sub: str, aud: str) -> str:
        return f"{b64json(self.header(alg='none'))}.{b64json(self.claims(sub, aud))}."

    def unpublished_key(self, sub: str, aud: str, *, same_kid: bool) -> str:
        """Signed by a key the bundle does not hold (with a published `kid` or a new one)."""
        key = ec.generate_private_key(ec.SECP256R1())
        header = self.header() if same_kid else self.header(kid="k" * 32)
        return self.es256(self.claims(sub, aud), header, key=key)
