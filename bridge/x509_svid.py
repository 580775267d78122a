"""An X.509-SVID as the bridge holds it: the chain as DER, the private key as an object.

The private key lives only in this process's memory (a `cryptography` key object, as
py-spiffe hands it over); it is never serialised except for the opt-in X.509 files
output and, for an mTLS handshake, into an anonymous in-memory file (`memfd`). Its
`repr` shows the SPIFFE ID and times, never the key; `secrets()` gives the redactor
what a log line could only contain by accident (the key's PEM body, line by line).
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass, field, replace
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

REDATE_BELOW = 0.5  # seconds: see bridge.model


@dataclass(frozen=True, slots=True)
class X509Svid:
    """One X.509-SVID: `chain` is the leaf then its intermediates (DER), `bundle` the
    trust domain's X.509 authorities (DER); times as in `bridge.model.JwtSvid`."""

    spiffe_id: str
    chain: tuple[bytes, ...] = field(repr=False)
    private_key: Any = field(repr=False)
    expires_at: float
    issued_at: float
    bundle: tuple[bytes, ...] = field(default=(), repr=False)
    deadline: float = field(default=-1.0, kw_only=True)

    @property
    def leaf(self) -> bytes:
        return self.chain[0]

    @property
    def intermediates(self) -> tuple[bytes, ...]:
        return self.chain[1:]

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the leaf: a new value means the SVID rotated."""
        return hashlib.sha256(self.chain[0]).hexdigest()

    @property
    def serial(self) -> int:
        return int(x509.load_der_x509_certificate(self.chain[0]).serial_number)

    @property
    def key_kind(self) -> str:
        """`ECDSA` or `RSA` (what Roles Anywhere's algorithm names); ValueError else."""
        if isinstance(self.private_key, ec.EllipticCurvePrivateKey):
            return "ECDSA"
        if isinstance(self.private_key, rsa.RSAPrivateKey):
            return "RSA"
        raise ValueError(f"an X.509-SVID key of type {type(self.private_key).__name__} "
                         "cannot sign for AWS (ECDSA or RSA only)")

    @property
    def token(self) -> str:
        """No bearer token: an X.509-SVID proves itself by its key (kept for the
        scheduler's uniform handling of what a source hands over)."""
        return ""

    def secrets(self) -> tuple[str, ...]:
        return key_secrets(self.private_key)

    def in_terms_of(self, offset: float) -> X509Svid:
        """As `JwtSvid.in_terms_of`: wall-clock times re-expressed after a host step."""
        delta = offset + self.deadline - self.expires_at
        if abs(delta) < REDATE_BELOW:
            return self
        return replace(self, expires_at=self.expires_at + delta,
                       issued_at=self.issued_at + delta)

    def chain_pem(self) -> bytes:
        return b"".join(der_to_pem(d) for d in self.chain)

    def bundle_pem(self) -> bytes:
        return b"".join(der_to_pem(d) for d in self.bundle)

    def key_pem(self) -> bytes:
        """The key as unencrypted PKCS#8 PEM: only for the opt-in files and memfd."""
        return bytes(self.private_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()))


def der_to_pem(der: bytes) -> bytes:
    body = base64.encodebytes(der).replace(b"\n", b"")
    lines = [body[i:i + 64] for i in range(0, len(body), 64)]
    return b"-----BEGIN CERTIFICATE-----\n" + b"\n".join(lines) + b"\n-----END CERTIFICATE-----\n"


def key_secrets(private_key: Any) -> tuple[str, ...]:
    """The key's PKCS#8 body as one base64 string and as its PEM lines."""
    try:
        der = private_key.private_bytes(serialization.Encoding.DER,
                                        serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption())
    except (AttributeError, TypeError, ValueError):
        return ()
    body = base64.b64encode(der).decode()
    return (body, *(body[i:i + 64] for i in range(0, len(body), 64)))
