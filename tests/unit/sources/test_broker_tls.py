"""The broker hop verifies the agent the SPIFFE way: the chain to the trust bundle
(OpenSSL), exactly one SPIFFE ID URI SAN equal to (or under) `agent_id`, not a CA."""

from __future__ import annotations

import datetime
import os
import socket
import ssl
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from bridge.sources.broker_tls import (
    AgentIdentity,
    BrokerTlsHop,
    PeerRejectedError,
    TlsMaterial,
    verify_agent_certificate,
)

AGENT = "spiffe://example.org/spire/agent/join_token/abc"


def _ca() -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "SPIRE")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False,
                                         False), critical=True)
            .add_extension(x509.SubjectAlternativeName(
                [x509.UniformResourceIdentifier("spiffe://example.org")]), critical=False)
            .sign(key, hashes.SHA256()))
    return cert, key


def _leaf(ca: tuple[x509.Certificate, Any], uris: list[str], *, is_ca: bool = False
          ) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    builder = (x509.CertificateBuilder().subject_name(x509.Name([]))
               .issuer_name(ca[0].subject).public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=1))
               .not_valid_after(now + datetime.timedelta(hours=1))
               .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
               .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                     ExtendedKeyUsageOID.CLIENT_AUTH]),
                              critical=False))
    if uris:
        builder = builder.add_extension(x509.SubjectAlternativeName(
            [x509.UniformResourceIdentifier(u) for u in uris]), critical=True)
    return builder.sign(ca[1], hashes.SHA256()), key


def _der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


@pytest.mark.parametrize(("pattern", "uris"), [
    (AGENT, [AGENT]),
    ("spiffe://example.org/spire/agent/*", [AGENT]),
])
def test_the_agents_id_is_accepted(pattern: str, uris: list[str]) -> None:
    ca = _ca()
    assert verify_agent_certificate(_der(_leaf(ca, uris)[0]), AgentIdentity(pattern)) == AGENT


@pytest.mark.parametrize(("pattern", "uris", "is_ca", "words"), [
    (AGENT, ["spiffe://example.org/workload"], False, "is not"),
    ("spiffe://example.org/spire/agent/*", ["spiffe://example.org/spire/agent"], False,
     "is not"),
    (AGENT, ["spiffe://other.org/spire/agent/join_token/abc"], False, "trust domain"),
    (AGENT, [AGENT, "spiffe://example.org/x"], False, "exactly one"),
    (AGENT, ["https://example.org/agent"], False, "exactly one"),
    (AGENT, [], False, "no SAN"),
    (AGENT, [AGENT], True, "CA"),
], ids=["other-id", "prefix-itself", "other-trust-domain", "two-ids", "not-spiffe", "no-san",
        "ca-leaf"])
def test_anything_else_is_refused(pattern: str, uris: list[str], is_ca: bool,
                                  words: str) -> None:
    cert = _leaf(_ca(), uris, is_ca=is_ca)[0]
    with pytest.raises(PeerRejectedError, match=words):
        verify_agent_certificate(_der(cert), AgentIdentity(pattern))


@pytest.fixture
def agent_tls() -> Iterator[tuple[str, tuple[x509.Certificate, Any]]]:
    """A TLS echo server on a unix socket, presenting AGENT from its own CA and asking
    for a client certificate from the same CA (as the agent's broker endpoint does)."""
    ca = _ca()
    cert, key = _leaf(ca, [AGENT])
    work = Path(tempfile.mkdtemp(prefix="sb-tls-", dir="/tmp"))
    (work / "agent.pem").write_bytes(
        cert.public_bytes(serialization.Encoding.PEM) + key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(work / "agent.pem")
    ctx.load_verify_locations(cadata=ca[0].public_bytes(serialization.Encoding.PEM).decode())
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.set_alpn_protocols(["h2"])
    path = str(work / "broker.sock")
    server = socket.socket(socket.AF_UNIX)
    server.bind(path)
    server.listen(4)
    server.settimeout(0.1)  # close() does not wake a blocked accept()
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(10)
            try:
                with ctx.wrap_socket(conn, server_side=True) as tls:
                    data = tls.recv(100)
                    tls.sendall(b"echo:" + data)
            except (OSError, ssl.SSLError):
                pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield path, ca
    stop.set()
    server.close()
    thread.join(5)
    for f in work.iterdir():
        f.unlink()
    work.rmdir()


def _through_hop(path: str, ca: tuple[x509.Certificate, Any], pattern: str,
                 trusted: x509.Certificate) -> bytes:
    client_cert, client_key = _leaf(ca, ["spiffe://example.org/spiffe-bridge"])
    hop = BrokerTlsHop(path, agent=AgentIdentity(pattern), handshake_timeout=5,
                       material=lambda: TlsMaterial((client_cert,), client_key, (trusted,)))
    hop.start()
    try:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(10)
            s.connect(hop.address.removeprefix("unix:"))
            s.sendall(b"hello")
            try:
                return s.recv(100)
            except ConnectionResetError:
                return b""
    finally:
        hop.close()


def test_a_verified_agent_is_relayed(agent_tls: tuple[str, Any]) -> None:
    """The right CA and ID: bytes go through the TLS connection both ways."""
    path, ca = agent_tls
    assert _through_hop(path, ca, AGENT, ca[0]) == b"echo:hello"


def test_an_agent_from_another_ca_is_cut_off(agent_tls: tuple[str, Any]) -> None:
    """A chain that does not lead to our bundle: nothing is relayed."""
    path, ca = agent_tls
    assert _through_hop(path, ca, AGENT, _ca()[0]) == b""


def test_an_agent_with_another_id_is_cut_off(agent_tls: tuple[str, Any]) -> None:
    """The chain is fine but the SPIFFE ID is not the agent's: nothing is relayed."""
    path, ca = agent_tls
    assert _through_hop(path, ca, "spiffe://example.org/spire/agent/other", ca[0]) == b""


def test_the_hop_directory_is_private() -> None:
    hop = BrokerTlsHop("/nonexistent", agent=AgentIdentity(AGENT), handshake_timeout=1,
                       material=lambda: TlsMaterial((), None, ()))
    try:
        assert os.stat(os.path.dirname(hop.address.removeprefix("unix:"))).st_mode & 0o077 == 0
    finally:
        hop.close()
