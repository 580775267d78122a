"""A JWT-SVID signing authority for the dev stack. DEVELOPMENT ONLY.

It stands in for the SPIRE server's JWT key manager so that the fake Workload API,
the OIDC discovery endpoint and the cloud emulators all agree on one key set:
ES256 keys on P-256 with a random 32-character `kid`, tokens shaped like SPIRE's
(header `typ: JWT` + `kid`; integer `sub`/`aud`/`exp`/`iat`; `iss` only when an
issuer is set), the plain JWKS SPIRE's OIDC provider serves, and the SPIFFE bundle
form (`use: jwt-svid`) the Workload API streams.

Rotation keeps old keys published, as SPIRE does while tokens signed by them may
still be live. `impostor()` makes a look-alike authority (same trust domain, issuer
and `kid`, different key) for "signed by the wrong key" tests.

Private keys never leave this module in printable form: `SigningKey` hides them
from `repr`, and nothing here logs.
"""

from __future__ import annotations

import secrets
import string
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

_KID_ALPHABET = string.ascii_letters + string.digits
_KID_LENGTH = 32  # SPIRE's key IDs are 32 random alphanumerics
_SPIFFE_BUNDLE_USE = "jwt-svid"

Subscriber = Callable[[], None]
"""Called (without arguments, outside the authority's lock) when the key set changes."""


def _random_kid() -> str:
    return "".join(secrets.choice(_KID_ALPHABET) for _ in range(_KID_LENGTH))


@dataclass(frozen=True, slots=True)
class SigningKey:
    """One ES256 signing key and its `kid`; the private half is hidden from repr."""

    kid: str
    private_key: ec.EllipticCurvePrivateKey = field(repr=False)
    algorithm: str = "ES256"

    @classmethod
    def generate(cls, *, kid: str | None = None) -> SigningKey:
        """A fresh P-256 key with the given `kid`, or a random SPIRE-shaped one."""
        return cls(kid=kid or _random_kid(), private_key=ec.generate_private_key(ec.SECP256R1()))

    @property
    def public_key(self) -> ec.EllipticCurvePublicKey:
        """The verification half."""
        return self.private_key.public_key()

    def public_jwk(self) -> dict[str, str]:
        """The public key as a JWK: kty, crv, x, y, kid, alg."""
        jwk = ECAlgorithm.to_jwk(self.public_key, as_dict=True)
        return {
            "kty": str(jwk["kty"]),
            "crv": str(jwk["crv"]),
            "x": str(jwk["x"]),
            "y": str(jwk["y"]),
            "kid": self.kid,
            "alg": self.algorithm,
        }


class JwtAuthority:
    """Mints JWT-SVIDs for one trust domain and publishes its keys. Thread-safe."""

    def __init__(
        self,
        trust_domain: str,
        *,
        issuer: str | None = None,
        key: SigningKey | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Create an authority with one active key.

        Raises:
            ValueError: `trust_domain` is empty or given as a URI.
        """
        if not trust_domain or "/" in trust_domain or ":" in trust_domain:
            raise ValueError(
                f"trust domain must be a bare name like 'example.org': {trust_domain!r}"
            )
        self._trust_domain = trust_domain
        self._clock = clock
        self._lock = threading.RLock()
        first = key or SigningKey.generate()
        self._keys: dict[str, SigningKey] = {first.kid: first}
        self._active = first
        self._issuer = issuer
        self._version = 0
        self._subscribers: list[Subscriber] = []

    def __repr__(self) -> str:
        return (
            f"JwtAuthority(trust_domain={self._trust_domain!r}, issuer={self.issuer!r}, "
            f"kids={list(self.kids)!r})"
        )

    # -- identity of the authority -------------------------------------------------

    @property
    def trust_domain(self) -> str:
        """The bare trust domain name, e.g. `example.org`."""
        return self._trust_domain

    @property
    def issuer(self) -> str | None:
        """The `iss` claim put in minted tokens, or None to leave it out (SPIRE's default)."""
        with self._lock:
            return self._issuer

    def set_issuer(self, issuer: str | None) -> None:
        """Change the `iss` claim of tokens minted from now on."""
        with self._lock:
            self._issuer = issuer

    # -- keys ------------------------------------------------------------------------

    @property
    def active_key(self) -> SigningKey:
        """The key new tokens are signed with."""
        with self._lock:
            return self._active

    @property
    def active_kid(self) -> str:
        """The `kid` of the active key."""
        return self.active_key.kid

    @property
    def kids(self) -> tuple[str, ...]:
        """Every published `kid`, oldest first."""
        with self._lock:
            return tuple(self._keys)

    @property
    def version(self) -> int:
        """Increases on every change to the published key set."""
        with self._lock:
            return self._version

    def public_key(self, kid: str) -> ec.EllipticCurvePublicKey | None:
        """The published public key with this `kid`, or None."""
        with self._lock:
            key = self._keys.get(kid)
        return key.public_key if key is not None else None

    def rotate(self, *, key: SigningKey | None = None) -> SigningKey:
        """Make a new key (or `key`) active; the previous keys stay published.

        Raises:
            ValueError: `key` reuses a published `kid`.
        """
        new = key or SigningKey.generate()
        with self._lock:
            if new.kid in self._keys:
                raise ValueError(f"kid {new.kid!r} is already published")
            self._keys[new.kid] = new
            self._active = new
            self._version += 1
            subscribers = list(self._subscribers)
        _notify(subscribers)
        return new

    def revoke(self, kid: str) -> None:
        """Stop publishing a non-active key (tokens it signed stop validating).

        Raises:
            KeyError: no published key has this `kid`.
            ValueError: `kid` is the active key; rotate first.
        """
        with self._lock:
            if kid not in self._keys:
                raise KeyError(kid)
            if kid == self._active.kid:
                raise ValueError("cannot revoke the active key; rotate first")
            del self._keys[kid]
            self._version += 1
            subscribers = list(self._subscribers)
        _notify(subscribers)

    def impostor(self) -> JwtAuthority:
        """A look-alike authority: same trust domain, issuer and active `kid`, other key.

        Tokens it mints look exactly like this authority's but fail signature checks.
        """
        with self._lock:
            return JwtAuthority(
                self._trust_domain,
                issuer=self._issuer,
                key=SigningKey.generate(kid=self._active.kid),
                clock=self._clock,
            )

    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        """Call `callback` after every key-set change; returns the unsubscribe function."""
        with self._lock:
            self._subscribers.append(callback)

        def unsubscribe() -> None:
            with self._lock:
                if callback in self._subscribers:
                    self._subscribers.remove(callback)

        return unsubscribe

    # -- key documents -----------------------------------------------------------------

    def jwks(self, *, use: str | None = None) -> dict[str, Any]:
        """The plain JWKS of published keys, as SPIRE's OIDC discovery provider serves it."""
        with self._lock:
            keys = list(self._keys.values())
        documents: list[dict[str, str]] = []
        for key in keys:
            jwk = key.public_jwk()
            if use is not None:
                jwk["use"] = use
            documents.append(jwk)
        return {"keys": documents}

    def spiffe_bundle(self) -> dict[str, Any]:
        """The SPIFFE JWT bundle: every published key with `use: jwt-svid` and its `kid`."""
        return self.jwks(use=_SPIFFE_BUNDLE_USE)

    # -- tokens ------------------------------------------------------------------------

    def sign(
        self,
        claims: Mapping[str, Any],
        *,
        headers: Mapping[str, Any] | None = None,
        key: SigningKey | None = None,
    ) -> str:
        """Sign arbitrary claims as a compact JWS (header `typ: JWT` + `kid`, then `headers`).

        The low-level primitive behind `mint`; tests use it for tokens SPIRE would never
        issue (missing `exp`, float timestamps, several audiences...). `key` may be any
        SigningKey, published or not. An `alg` in `headers` changes the signing
        algorithm itself (PyJWT), so a lying `alg` has to be spliced in afterwards.
        """
        signer = key or self.active_key
        header: dict[str, Any] = {"typ": "JWT", "kid": signer.kid}
        if headers:
            header.update(headers)
        return jwt.encode(
            dict(claims), signer.private_key, algorithm=signer.algorithm, headers=header
        )

    def mint(
        self,
        sub: str,
        audience: Sequence[str],
        ttl_seconds: int,
        *,
        extra_claims: Mapping[str, Any] | None = None,
        headers: Mapping[str, Any] | None = None,
        iat: int | None = None,
        key: SigningKey | None = None,
    ) -> str:
        """Mint a SPIRE-shaped JWT-SVID.

        Claims: `sub`, `aud` (always a list), integer `iat` (now unless given) and
        `exp = iat + ttl_seconds`, plus `iss` when the authority has an issuer;
        `extra_claims` are added last and may override any of them.

        Raises:
            ValueError: `audience` is empty or a bare string.
        """
        if isinstance(audience, str) or not audience:
            raise ValueError("audience must be a non-empty list of strings")
        issued = int(self._clock()) if iat is None else int(iat)
        claims: dict[str, Any] = {
            "sub": sub,
            "aud": list(audience),
            "exp": issued + int(ttl_seconds),
            "iat": issued,
        }
        issuer = self.issuer
        if issuer is not None:
            claims["iss"] = issuer
        if extra_claims:
            claims.update(extra_claims)
        return self.sign(claims, headers=headers, key=key)


def _notify(subscribers: list[Subscriber]) -> None:
    for callback in subscribers:
        callback()
