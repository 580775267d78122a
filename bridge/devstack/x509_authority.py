"""A dev X.509 CA for one trust domain: X.509-SVIDs as SPIRE issues them. DEVELOPMENT ONLY.

Root CA (self-signed, `spiffe://<td>` URI SAN, CA:true) -> optional intermediate ->
leaf X.509-SVIDs (CA:false, digitalSignature, serverAuth+clientAuth, exactly one URI
SAN: the SPIFFE ID), EC P-256 keys by default (SPIRE's default `ec-p256`), RSA-2048 on
request. `rotate()` changes the CA key (the old one stays in the bundle for `keep`
rotations, as SPIRE keeps the previous authority until its SVIDs are gone);
subscribers hear of every change, so the Workload API pushes new SVIDs at once.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

KeyType = Literal["ec-p256", "rsa-2048"]
DEFAULT_X509_SVID_TTL = 3600  # SPIRE's default_x509_svid_ttl (1h)


@dataclass(frozen=True, slots=True)
class IssuedSvid:
    """A minted X.509-SVID: `chain` leaf first (DER), `key` PKCS#8 DER (secret)."""

    spiffe_id: str
    chain: tuple[bytes, ...]
    key: bytes = field(repr=False)
    private_key: Any = field(repr=False)


def _new_key(kind: KeyType) -> Any:
    if kind == "rsa-2048":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return ec.generate_private_key(ec.SECP256R1())


class X509Authority:
    """The CA of one trust domain. Thread-safe."""

    def __init__(self, trust_domain: str, *, intermediate: bool = False,
                 clock: Callable[[], float] | None = None, ca_ttl: int = 7 * 86400,
                 keep: int = 1) -> None:
        import time

        self.trust_domain = trust_domain
        self._intermediate = intermediate
        self._clock = clock or time.time
        self._ca_ttl = ca_ttl
        self._keep = keep
        self._lock = threading.Lock()
        self._subscribers: list[Callable[[], None]] = []
        self._previous: list[x509.Certificate] = []
        self._root_key, self._root = self._make_root()
        self._inter_key: Any = None
        self._inter: x509.Certificate | None = None
        if intermediate:
            self._inter_key, self._inter = self._make_intermediate()

    # -- what it serves ----------------------------------------------------------------

    @property
    def roots(self) -> tuple[x509.Certificate, ...]:
        """The X.509 bundle: the current root, then the previous ones still kept."""
        with self._lock:
            return (self._root, *self._previous)

    def bundle_der(self) -> bytes:
        return b"".join(c.public_bytes(serialization.Encoding.DER) for c in self.roots)

    def bundle_pem(self) -> bytes:
        return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in self.roots)

    def mint(self, spiffe_id: str, *, ttl: int = DEFAULT_X509_SVID_TTL,
             key_type: KeyType = "ec-p256", not_before: float | None = None) -> IssuedSvid:
        """A new X.509-SVID for `spiffe_id`, valid from `not_before` (now) for `ttl`."""
        key = _new_key(key_type)
        start = datetime.fromtimestamp(
            (self._clock() if not_before is None else not_before) - 10, tz=UTC)
        with self._lock:
            issuer_key, issuer = (self._inter_key, self._inter) if self._inter else (
                self._root_key, self._root)
            chain_tail = [self._inter] if self._inter is not None else []
        leaf = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
                                     x509.NameAttribute(NameOID.ORGANIZATION_NAME, "SPIRE")]))
            .issuer_name(issuer.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(start + timedelta(seconds=ttl + 10))
            .add_extension(x509.SubjectAlternativeName(
                [x509.UniformResourceIdentifier(spiffe_id)]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=True,
                data_encipherment=False, key_agreement=True, key_cert_sign=False,
                crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                critical=False)
            .sign(issuer_key, hashes.SHA256())
        )
        der = serialization.Encoding.DER
        return IssuedSvid(
            spiffe_id=spiffe_id,
            chain=tuple(c.public_bytes(der) for c in (leaf, *chain_tail)),
            key=key.private_bytes(der, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()),
            private_key=key)

    # -- rotation ----------------------------------------------------------------------

    def rotate(self) -> None:
        """A new CA key (and intermediate); SVIDs minted from now on chain to it."""
        root_key, root = self._make_root()
        inter_key: Any = None
        inter: x509.Certificate | None = None
        if self._intermediate:
            inter_key, inter = self._make_intermediate(root_key, root)
        with self._lock:
            self._previous = [self._root, *self._previous][: self._keep]
            self._root_key, self._root = root_key, root
            self._inter_key, self._inter = inter_key, inter
            subscribers = list(self._subscribers)
        for notify in subscribers:
            notify()

    def subscribe(self, notify: Callable[[], None]) -> Callable[[], None]:
        with self._lock:
            self._subscribers.append(notify)

        def unsubscribe() -> None:
            with self._lock:
                if notify in self._subscribers:
                    self._subscribers.remove(notify)
        return unsubscribe

    # -- construction ------------------------------------------------------------------

    def _ca(self, key: Any, subject: x509.Name, issuer: x509.Name, signer: Any,
            path_length: int | None) -> x509.Certificate:
        start = datetime.fromtimestamp(self._clock() - 60, tz=UTC)
        return (
            x509.CertificateBuilder()
            .subject_name(subject).issuer_name(issuer).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(start + timedelta(seconds=self._ca_ttl))
            .add_extension(x509.SubjectAlternativeName(
                [x509.UniformResourceIdentifier(f"spiffe://{self.trust_domain}")]),
                critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=path_length),
                           critical=True)
            .add_extension(x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .sign(signer, hashes.SHA256())
        )

    def _make_root(self) -> tuple[Any, x509.Certificate]:
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
                          x509.NameAttribute(NameOID.ORGANIZATION_NAME, "SPIFFE"),
                          x509.NameAttribute(NameOID.SERIAL_NUMBER,
                                             str(x509.random_serial_number()))])
        return key, self._ca(key, name, name, key, None)

    def _make_intermediate(self, root_key: Any = None, root: x509.Certificate | None = None
                           ) -> tuple[Any, x509.Certificate]:
        root_key = root_key or self._root_key
        root = root or self._root
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
                          x509.NameAttribute(NameOID.ORGANIZATION_NAME, "SPIRE intermediate"),
                          x509.NameAttribute(NameOID.SERIAL_NUMBER,
                                             str(x509.random_serial_number()))])
        return key, self._ca(key, name, root.subject, root_key, 0)
