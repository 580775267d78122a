"""mTLS to the SPIRE agent's broker endpoint, verified the SPIFFE way, in front of a
plain gRPC channel.

grpcio's Python TLS checks the server's host name and has no hook for a SPIFFE ID, so
a SPIRE agent's certificate (a URI SAN only) cannot be verified by it. Verification is
never turned off; it moves to an in-process hop instead (`bridge.relay`): the gRPC
channel speaks plain HTTP/2 to a unix socket in a private directory (mode 0700, and
the hop serves only connections whose `SO_PEERCRED` pid is this process), and the hop
opens each connection to the agent with the stdlib `ssl` module:

- client certificate: the bridge's own X.509-SVID (py-spiffe's `X509Source`, the
  current one at each new connection, so rotation needs nothing), loaded from a
  memfd, never a file on disk;
- server chain: verified by OpenSSL against the agent trust domain's X.509 bundle
  (from the same source), host names not checked (there are none);
- server identity: the leaf must be a non-CA X.509-SVID with exactly one URI SAN, a
  SPIFFE ID in the agent's trust domain equal to `agent_id` (or under it, when it ends
  in `/*`: agents' IDs carry their node's name). Anything else closes the connection
  before a byte of gRPC goes through, and the channel sees UNAVAILABLE;
- ALPN `h2` (the agent's grpc-go refuses TLS without it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import socket
import ssl
import struct
import tempfile
from collections.abc import Callable
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtensionOID

from bridge.relay import Opened, UnixRelay

log = logging.getLogger(__name__)
_UCRED = struct.Struct("3i")


class PeerRejectedError(ValueError):
    """The agent's certificate is not the X.509-SVID we expect."""


@dataclass(frozen=True, slots=True)
class AgentIdentity:
    """Which SPIFFE ID the agent must present: exact, or a path prefix (`.../*`)."""

    pattern: str

    @property
    def trust_domain(self) -> str:
        return self.pattern.removeprefix("spiffe://").split("/", 1)[0]

    def matches(self, spiffe_id: str) -> bool:
        if self.pattern.endswith("/*"):
            base = self.pattern[:-1]
            return spiffe_id.startswith(base) and len(spiffe_id) > len(base)
        return spiffe_id == self.pattern


def verify_agent_certificate(der: bytes | None, agent: AgentIdentity) -> str:
    """The agent's SPIFFE ID from its (chain-verified) leaf, or PeerRejectedError."""
    if not der:
        raise PeerRejectedError("the agent presented no certificate")
    leaf = x509.load_der_x509_certificate(der)
    try:
        basic = leaf.extensions.get_extension_for_oid(ExtensionOID.BASIC_CONSTRAINTS).value
        if isinstance(basic, x509.BasicConstraints) and basic.ca:
            raise PeerRejectedError("the agent's leaf certificate is a CA")
    except x509.ExtensionNotFound:
        pass
    try:
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        raise PeerRejectedError("the agent's certificate has no SPIFFE ID (no SAN)") from None
    uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    if len(uris) != 1 or not uris[0].startswith("spiffe://"):
        raise PeerRejectedError("the agent's certificate must carry exactly one SPIFFE ID "
                                f"URI SAN (found {len(uris)})")
    spiffe_id = uris[0]
    if spiffe_id.removeprefix("spiffe://").split("/", 1)[0] != agent.trust_domain:
        raise PeerRejectedError(f"the agent's SPIFFE ID {spiffe_id} is not in trust domain "
                                f"{agent.trust_domain}")
    if not agent.matches(spiffe_id):
        raise PeerRejectedError(f"the agent's SPIFFE ID {spiffe_id} is not {agent.pattern}")
    return spiffe_id


@dataclass(frozen=True, slots=True)
class TlsMaterial:
    """What one connection to the agent is made with (the current SVID and bundle)."""

    chain: tuple[x509.Certificate, ...]
    key: object  # a cryptography private key
    authorities: tuple[x509.Certificate, ...]  # the agent trust domain's X.509 bundle


def client_context(material: TlsMaterial) -> ssl.SSLContext:
    """A client context presenting our SVID, trusting only the agent's trust bundle."""
    if not material.authorities:
        raise PeerRejectedError("no X.509 bundle for the agent's trust domain")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = False  # no DNS names here: the SPIFFE ID is checked instead
    ctx.verify_mode = ssl.CERT_REQUIRED  # the chain to the bundle, always
    ctx.load_verify_locations(cadata="".join(
        c.public_bytes(serialization.Encoding.PEM).decode() for c in material.authorities))
    ctx.set_alpn_protocols(["h2"])
    key = material.key
    pem_key = key.private_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption())
    pem_chain = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in material.chain)
    fd = os.memfd_create("spiffe-bridge-svid", os.MFD_CLOEXEC)
    try:  # ssl loads certificates from paths only: one that lives in memory only
        os.write(fd, pem_chain + pem_key)
        ctx.load_cert_chain(f"/proc/self/fd/{fd}")
    finally:
        os.close(fd)
    return ctx


class BrokerTlsHop:
    """The hop: `address` is what the gRPC channel dials (plain, in-process only)."""

    def __init__(self, agent_socket: str, *, agent: AgentIdentity,
                 material: Callable[[], TlsMaterial], handshake_timeout: float) -> None:
        self._agent_socket = agent_socket
        self._agent = agent
        self._material = material
        self._handshake_timeout = handshake_timeout
        self._dir = tempfile.mkdtemp(prefix="spiffe-bridge-broker-")  # 0700 by mkdtemp
        self._relay = UnixRelay(os.path.join(self._dir, "hop.sock"), upstream=self._open,
                                mode=0o600, name="broker-tls-hop")
        self.last_error: str | None = None

    @property
    def address(self) -> str:
        return f"unix:{self._relay.path}"

    def start(self) -> None:
        self._relay.start()

    def close(self) -> None:
        self._relay.stop()
        shutil.rmtree(self._dir, ignore_errors=True)

    async def _open(self, sock: socket.socket) -> Opened | None:
        pid, _, _ = _UCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                  _UCRED.size))
        if pid != os.getpid():  # the directory is ours alone; be sure anyway
            log.warning("broker hop: refused a connection from pid %d", pid)
            return None
        try:
            ctx = client_context(self._material())
        except (PeerRejectedError, ssl.SSLError, ValueError, OSError) as exc:
            self.last_error = f"no usable X.509-SVID for the broker connection: {exc}"
            log.warning("broker hop: %s", self.last_error)
            return None
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(
                self._agent_socket, ssl=ctx, server_hostname="",
                ssl_handshake_timeout=self._handshake_timeout),
                self._handshake_timeout)
        except (OSError, TimeoutError) as exc:
            self.last_error = f"cannot reach the agent's broker endpoint: {exc}"
            log.debug("broker hop: %s", self.last_error)
            return None
        try:
            _verify_connection(writer.get_extra_info("ssl_object"), self._agent)
        except (PeerRejectedError, ValueError) as exc:
            self.last_error = f"refused the agent's certificate: {exc}"
        else:
            self.last_error = None
            return Opened(reader, writer)
        log.error("broker hop: %s", self.last_error)
        with contextlib.suppress(Exception):
            writer.close()
        return None


def _verify_connection(ssl_object: ssl.SSLObject | None, agent: AgentIdentity) -> None:
    """The chain is OpenSSL's; the SPIFFE ID and ALPN are checked here."""
    der = ssl_object.getpeercert(binary_form=True) if ssl_object else None
    verify_agent_certificate(der, agent)
    if ssl_object is None or ssl_object.selected_alpn_protocol() != "h2":
        raise PeerRejectedError("the agent did not agree to ALPN h2")
