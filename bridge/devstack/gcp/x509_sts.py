"""Google STS over mTLS for X.509 workload identity federation. DEVELOPMENT ONLY.

`https://127.0.0.1:<port>/v1/token` (Google's is sts.mtls.googleapis.com): the RFC 8693
form with `subject_token_type = urn:ietf:params:oauth:token-type:mtls` and the
`subject_token` google-auth's X.509 supplier sends (a JSON list of base64 DER
certificates, leaf first). Checks, in order, with Google's RFC 6749 errors:

1. the form (grant type, requested and subject token types)     -> invalid_request
2. the provider: an X.509 provider of this emulator, enabled   -> invalid_target
3. a client certificate in the TLS handshake, and the subject token's leaf is that
   certificate (the token is bound to the connection)           -> invalid_grant
4. each certificate of the subject token within its validity, and a chain from the
   leaf through the intermediates to the pool's trust store     -> invalid_grant
5. the attribute condition (a StringLike glob on the leaf's SAN URI, which becomes
   `google.subject`)                                            -> unauthorized_client

The federated token goes into the Google emulator's token store, so its IAM
Credentials endpoint impersonates with it as with any other. Limits of the stand-in:
Python's `ssl` cannot accept every client certificate and judge it later, so the
handshake itself verifies against the union of the providers' trust stores: a
certificate from an unknown CA (or an expired one) fails there, as a TLS alert.
The server's own certificate comes from a dev CA (`server_ca_pem`): clients trust it
through `SSL_CERT_FILE`.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import os
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from bridge.devstack._lifecycle import StartStop
from bridge.devstack.aws.roles_anywhere import chains_to, san_uri
from bridge.devstack.gcp.providers import federated_principal
from bridge.devstack.gcp.replies import StsError
from bridge.devstack.gcp.sts import (
    ACCESS_TOKEN_TYPE,
    FEDERATED_TOKEN_LIFETIME,
    TOKEN_EXCHANGE_GRANT,
)
from bridge.devstack.gcp.tokens import GoogleToken, TokenStore, new_token
from bridge.devstack.globs import string_like

MTLS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:mtls"
TOKEN_PATH = "/v1/token"


@dataclass(frozen=True, slots=True)
class X509Provider:
    """A workload identity pool provider with an X.509 trust store."""

    audience: str
    roots: tuple[x509.Certificate, ...] = field(repr=False)
    condition: str | None = None  # StringLike on the SAN URI
    enabled: bool = True


@dataclass(frozen=True, slots=True)
class RecordedExchange:
    form: Mapping[str, str] = field(repr=False)
    error: str  # "" when it succeeded


class GcpMtlsSts(StartStop):
    """The mTLS token endpoint; issues into `tokens` (the Google emulator's). Thread-safe."""

    def __init__(self, tokens: TokenStore, *, clock: Callable[[], float] = time.time) -> None:
        self._tokens = tokens
        self._clock = clock
        self._lock = threading.Lock()
        self._providers: dict[str, X509Provider] = {}
        self._server: ThreadingHTTPServer | None = None
        self._current: ssl.SSLContext | None = None
        self._thread: threading.Thread | None = None
        self._port = 0
        self.requests: list[RecordedExchange] = []
        self._ca_key, self._ca = _server_ca()
        self._key, self._cert = _server_cert(self._ca_key, self._ca)

    @property
    def server_ca_pem(self) -> bytes:
        """The CA of the server certificate (for a client's SSL_CERT_FILE)."""
        return self._ca.public_bytes(serialization.Encoding.PEM)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self._port}{TOKEN_PATH}"

    def add_x509_provider(self, audience: str, roots: Iterable[x509.Certificate], *,
                          attribute_condition: str | None = None) -> X509Provider:
        provider = X509Provider(audience, tuple(roots), attribute_condition)
        with self._lock:
            self._providers[audience] = provider
        self._refresh_trust()
        return provider

    def set_trust_store(self, audience: str, roots: Iterable[x509.Certificate]) -> None:
        """Replace a provider's trust anchors (a CA rotation)."""
        with self._lock:
            old = self._providers[audience]
            self._providers[audience] = X509Provider(audience, tuple(roots), old.condition,
                                                     old.enabled)
        self._refresh_trust()

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        server = _TlsServer(("127.0.0.1", self._port), self)
        self._port = int(server.server_address[1])
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                                  name=f"devstack-gcp-mtls:{self._port}", daemon=True)
        thread.start()
        with self._lock:
            self._server, self._thread = server, thread

    def stop(self) -> None:
        with self._lock:
            server, thread = self._server, self._thread
            self._server = self._thread = None
        if server is not None:
            server.shutdown()
            server.server_close()
        if thread is not None:
            thread.join(5.0)

    # -- TLS ---------------------------------------------------------------------------

    def context(self) -> ssl.SSLContext:
        """The TLS context for the next connection (the trust stores as they are now)."""
        with self._lock:
            context = self._current
        if context is None:
            context = self._make_context()
            with self._lock:
                self._current = context
        return context

    def _make_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        _load_chain(context, self._cert, self._key)
        context.verify_mode = ssl.CERT_OPTIONAL
        with self._lock:
            roots = [r for p in self._providers.values() for r in p.roots]
        if roots:
            context.load_verify_locations(cadata=b"".join(
                r.public_bytes(serialization.Encoding.PEM) for r in roots).decode())
        return context

    def _refresh_trust(self) -> None:
        with self._lock:
            self._current = None

    # -- the exchange ------------------------------------------------------------------

    def answer(self, method: str, path: str, body: bytes, peer: bytes | None
               ) -> tuple[int, dict[str, Any]]:
        form = dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
        try:
            document = self._exchange(method, path, form, peer)
        except StsError as err:
            with self._lock:
                self.requests.append(RecordedExchange(form, err.error))
            return err.http_status, {"error": err.error, "error_description": err.description}
        with self._lock:
            self.requests.append(RecordedExchange(form, ""))
        return 200, document

    def _exchange(self, method: str, path: str, form: Mapping[str, str],
                  peer: bytes | None) -> dict[str, Any]:
        if method != "POST" or path != TOKEN_PATH:
            raise StsError("invalid_request", "The token endpoint only accepts POST.",
                           status=404 if path != TOKEN_PATH else 400)
        if form.get("grant_type") != TOKEN_EXCHANGE_GRANT:
            raise StsError("unsupported_grant_type", 'Invalid value for "grant_type".')
        if form.get("requested_token_type") != ACCESS_TOKEN_TYPE:
            raise StsError("invalid_request", 'Invalid value for "requested_token_type".')
        if form.get("subject_token_type") != MTLS_TOKEN_TYPE:
            raise StsError("invalid_request", 'Invalid value for "subject_token_type".')
        with self._lock:
            provider = self._providers.get(form.get("audience", ""))
        if provider is None or not provider.enabled:
            raise StsError("invalid_target", "The target service indicated by the "
                           '"audience" parameters is invalid.')
        if peer is None:
            raise StsError("invalid_grant", "A client certificate is required for mTLS "
                           "token exchange.")
        try:
            chain = [x509.load_der_x509_certificate(base64.b64decode(c))
                     for c in json.loads(form.get("subject_token", ""))]
        except (ValueError, TypeError):
            raise StsError("invalid_request", "The subject token is not a JSON list of "
                           "base64 DER certificates.") from None
        if not chain or chain[0].public_bytes(serialization.Encoding.DER) != peer:
            raise StsError("invalid_grant", "The subject token's leaf certificate is not the "
                           "client certificate of the connection.")
        now = self._clock()
        for cert in chain:
            if not cert.not_valid_before_utc.timestamp() <= now < \
                    cert.not_valid_after_utc.timestamp():
                raise StsError("invalid_grant", "The certificate is expired or not yet valid.")
        if not chains_to(chain[0], chain[1:], provider.roots):
            raise StsError("invalid_grant", "The certificate chain does not lead to a trust "
                           "anchor of the workload identity pool.")
        subject = san_uri(chain[0]) or ""
        if provider.condition is not None and \
                string_like(provider.condition).fullmatch(subject) is None:
            raise StsError("unauthorized_client",
                           "The given credential is rejected by the attribute condition.")
        token = self._tokens.remember(GoogleToken(
            token=new_token(), principal=federated_principal(provider.audience, subject),
            scopes=tuple(form.get("scope", "").split()), expires_at=now +
            FEDERATED_TOKEN_LIFETIME, provider=provider.audience, subject=subject))
        return {"access_token": token.token, "issued_token_type": ACCESS_TOKEN_TYPE,
                "token_type": "Bearer", "expires_in": FEDERATED_TOKEN_LIFETIME}


class _TlsServer(ThreadingHTTPServer):
    """Each accepted connection is wrapped with the endpoint's current TLS context."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], app: GcpMtlsSts) -> None:
        super().__init__(address, _Handler)
        self.app = app

    def get_request(self) -> tuple[Any, Any]:
        sock, address = self.socket.accept()
        sock.settimeout(10.0)
        try:
            return self.app.context().wrap_socket(sock, server_side=True), address
        except OSError:  # a failed handshake (unknown CA, ...): that connection only
            sock.close()
            raise


class _Handler(BaseHTTPRequestHandler):
    timeout = 10.0

    def log_message(self, format: str, *args: Any) -> None:
        """Silent: forms carry certificates; the stdlib log would print request lines."""

    def do_POST(self) -> None:
        self._answer()

    def do_GET(self) -> None:
        self._answer()

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(min(length, 1 << 20)) if length > 0 else b""
        connection: Any = self.connection
        peer = connection.getpeercert(binary_form=True) if hasattr(
            connection, "getpeercert") else None
        app: GcpMtlsSts = self.server.app  # type: ignore[attr-defined]  # our _TlsServer
        status, document = app.answer(self.command, self.path.split("?")[0], body, peer)
        data = json.dumps(document).encode()
        self.send_response_only(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Date", self.date_time_string())
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)


def _server_ca() -> tuple[Any, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "devstack mTLS server CA")])
    start = datetime.now(UTC) - timedelta(minutes=5)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(start + timedelta(days=7))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .sign(key, hashes.SHA256()))
    return key, cert


def _server_cert(ca_key: Any, ca: x509.Certificate) -> tuple[Any, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    start = datetime.now(UTC) - timedelta(minutes=5)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
            .issuer_name(ca.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(start + timedelta(days=7))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                 x509.DNSName("localhost")]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(ca_key, hashes.SHA256()))
    return key, cert


def _load_chain(context: ssl.SSLContext, cert: x509.Certificate, key: Any) -> None:
    """The server's own certificate and key, through memory files (no disk)."""
    fds: list[int] = []
    try:
        paths = []
        for name, data in (("server", cert.public_bytes(serialization.Encoding.PEM)),
                           ("server_key", key.private_bytes(
                               serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                               serialization.NoEncryption()))):
            fd = os.memfd_create(name, os.MFD_CLOEXEC)
            fds.append(fd)
            os.write(fd, data)
            paths.append(f"/proc/self/fd/{fd}")
        context.load_cert_chain(certfile=paths[0], keyfile=paths[1])
    finally:
        for fd in fds:
            os.close(fd)
