"""A throwaway certificate authority for dev-stack servers that must speak https.
DEVELOPMENT ONLY.

Entra's clients (msal, azure-identity) and Azure Storage SDKs refuse plain http, so the
Entra emulator and Azurite serve TLS with a leaf for 127.0.0.1/localhost signed by a
CA made here. Clients trust it through `ca_file` (REQUESTS_CA_BUNDLE for requests, the
`ssl` context for urllib). Keys stay in memory, except where a server that only takes
files (Azurite) needs them: `write_server_files`.
"""

from __future__ import annotations

import datetime
import ipaddress
import ssl
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_VALID = datetime.timedelta(days=2)


@dataclass(frozen=True, slots=True)
class DevCertificates:
    """A CA and one loopback server certificate signed by it (PEM)."""

    ca_pem: bytes
    cert_pem: bytes
    key_pem: bytes = field(repr=False)

    @classmethod
    def generate(cls) -> DevCertificates:
        now = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=5)
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME,
                                                "spiffe-bridge dev stack CA")])
        ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
              .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
              .not_valid_before(now).not_valid_after(now + _VALID)
              .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
              .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True,
                                           crl_sign=True, content_commitment=False,
                                           key_encipherment=False, data_encipherment=False,
                                           key_agreement=False, encipher_only=False,
                                           decipher_only=False), critical=True)
              .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
                             critical=False)
              .sign(ca_key, hashes.SHA256()))
        key = ec.generate_private_key(ec.SECP256R1())
        leaf = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
                .issuer_name(ca_name).public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now).not_valid_after(now + _VALID)
                .add_extension(x509.SubjectAlternativeName([
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                    x509.DNSName("localhost")]), critical=False)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                               critical=False)
                .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                    ca_key.public_key()), critical=False)
                .sign(ca_key, hashes.SHA256()))
        return cls(
            ca_pem=ca.public_bytes(serialization.Encoding.PEM),
            cert_pem=leaf.public_bytes(serialization.Encoding.PEM),
            key_pem=key.private_bytes(serialization.Encoding.PEM,
                                      serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))

    def server_context(self) -> ssl.SSLContext:
        """A server-side context holding the leaf (loaded through a private temp file:
        `ssl` takes keys only from files)."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        with tempfile.TemporaryDirectory(prefix="sb-tls-") as scratch:
            cert, key = self.write_server_files(Path(scratch))
            context.load_cert_chain(cert, key)
        return context

    def client_context(self) -> ssl.SSLContext:
        """A client context trusting only this CA."""
        return ssl.create_default_context(cadata=self.ca_pem.decode())

    def write_ca(self, directory: Path) -> Path:
        """`directory/dev-ca.pem` (public), for REQUESTS_CA_BUNDLE and the like."""
        path = directory / "dev-ca.pem"
        path.write_bytes(self.ca_pem)
        return path

    def write_server_files(self, directory: Path) -> tuple[Path, Path]:
        """`server.pem` and `server.key` (0600) in `directory`, for servers that take files."""
        cert, key = directory / "server.pem", directory / "server.key"
        cert.write_bytes(self.cert_pem)
        key.touch(mode=0o600)
        key.write_bytes(self.key_pem)
        return cert, key
