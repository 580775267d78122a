"""A fake SPIRE agent's SPIFFE Broker API endpoint. DEVELOPMENT ONLY.

Speaks the real wire protocol (`spiffe.broker.API` from go-spiffe v2.8.1's proto, mutual
TLS with X.509-SVIDs, the `broker.spiffe.io: true` header) so the bridge's broker client
runs against it unchanged:

- its own CA (`DevCa`, made with `cryptography`) issues the agent's serving X.509-SVID
  and, for the demo, the broker's client SVID; the server requires a client
  certificate from that CA and a SPIFFE ID in `brokers` (SPIRE refuses others at the
  TLS layer; here PERMISSION_DENIED, which the client classifies the same way);
- `FetchJWTSVID` attests a `WorkloadPIDReference` as SPIRE's `unix` attestor does, by
  the process's uid (`/proc/<pid>/status`), and mints a JWT-SVID with the dev stack's
  `JwtAuthority` for each SPIFFE ID registered to that uid; none is PERMISSION_DENIED
  "no identity issued", a PID that does not exist is NOT_FOUND, another reference type
  PERMISSION_DENIED, as SPIRE answers;
- `SubscribeToJWTBundles` streams the authority's JWKS keyed by `spiffe://<td>`.

X.509 RPCs are not served (UNIMPLEMENTED).
"""

from __future__ import annotations

import datetime
import json
import logging
import threading
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from bridge._proto.spiffe.broker import api_pb2, api_pb2_grpc
from bridge.devstack._lifecycle import StartStop
from bridge.devstack.authority import JwtAuthority
from bridge.devstack.x509_authority import X509Authority

_log = logging.getLogger(__name__)
SECURITY_HEADER = "broker.spiffe.io"
PID_REFERENCE = "type.googleapis.com/spiffe.broker.WorkloadPIDReference"
DEFAULT_SVID_TTL = 300


@dataclass(frozen=True)
class Svid:
    """An X.509-SVID: leaf first, and its key (for a server or a client)."""

    chain: tuple[x509.Certificate, ...]
    key: ec.EllipticCurvePrivateKey

    @property
    def chain_pem(self) -> bytes:
        return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in self.chain)

    @property
    def key_pem(self) -> bytes:
        return self.key.private_bytes(serialization.Encoding.PEM,
                                      serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption())


class DevCa:
    """A trust domain's X.509 authority for the dev stack (ES256, an hour's life)."""

    def __init__(self, trust_domain: str) -> None:
        self.trust_domain = trust_domain
        self._key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "spiffe-bridge dev")])
        self.certificate = (
            x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(self._key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(hours=24))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False,
                                         False), critical=True)
            .add_extension(x509.SubjectAlternativeName(
                [x509.UniformResourceIdentifier(f"spiffe://{trust_domain}")]), critical=False)
            .sign(self._key, hashes.SHA256()))

    @property
    def pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    def issue(self, spiffe_id: str, *, hours: float = 1.0) -> Svid:
        """An X.509-SVID for `spiffe_id` (URI SAN only, as SPIRE issues them)."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder().subject_name(x509.Name([]))
            .issuer_name(self.certificate.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(hours=hours))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(True, False, True, False, True, False, False, False,
                                         False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                  ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .add_extension(x509.SubjectAlternativeName(
                [x509.UniformResourceIdentifier(spiffe_id)]), critical=True)
            .sign(self._key, hashes.SHA256()))
        return Svid((cert,), key)


def _abort(context: grpc.ServicerContext, code: grpc.StatusCode, message: str) -> NoReturn:
    context.abort(code, message)
    raise AssertionError("abort raises")


class BrokerServer(StartStop):
    """The endpoint on a unix socket; `registrations` maps a uid to its SPIFFE IDs.
    `ca`: its own `DevCa`, or the dev stack's `X509Authority` (whose Workload API then
    hands the bridge the client SVID the endpoint trusts, as with a real agent)."""

    def __init__(self, socket_path: Path, *, authority: JwtAuthority,
                 ca: DevCa | X509Authority,
                 agent_id: str, brokers: Sequence[str],
                 registrations: Mapping[int, Sequence[str]],
                 svid_ttl: int = DEFAULT_SVID_TTL, proc: Path = Path("/proc")) -> None:
        self.socket_path = socket_path
        self.authority = authority
        self.ca = ca
        self.agent_svid = _serving_svid(ca, agent_id)
        self.brokers = frozenset(brokers)
        self._registrations = {uid: tuple(ids) for uid, ids in registrations.items()}
        self.svid_ttl = svid_ttl
        self._proc = proc
        self._server: grpc.Server | None = None
        self._stopping = threading.Event()

    @property
    def uri(self) -> str:
        return f"unix://{self.socket_path}"

    def register(self, uid: int, *spiffe_ids: str) -> None:
        self._registrations[uid] = tuple(spiffe_ids)

    def start(self) -> BrokerServer:
        self._stopping.clear()
        server = grpc.server(ThreadPoolExecutor(max_workers=8, thread_name_prefix="dev-broker"))
        api_pb2_grpc.add_APIServicer_to_server(_Servicer(self), server)
        credentials = grpc.ssl_server_credentials(
            [(self.agent_svid.key_pem, self.agent_svid.chain_pem)],
            root_certificates=_roots_pem(self.ca), require_client_auth=True)
        self.socket_path.parent.mkdir(parents=True, exist_ok=True)
        server.add_secure_port(f"unix:{self.socket_path}", credentials)
        server.start()
        self._server = server
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._server is not None:
            self._server.stop(0.2).wait(5)
            self._server = None

    # -- what the servicer asks --------------------------------------------------------

    def admit(self, context: grpc.ServicerContext) -> None:
        metadata = dict(context.invocation_metadata())
        if metadata.get(SECURITY_HEADER) != "true":
            _abort(context, grpc.StatusCode.INVALID_ARGUMENT,
                   "security header missing from request")
        peer = _peer_spiffe_id(context)
        if peer not in self.brokers:
            _abort(context, grpc.StatusCode.PERMISSION_DENIED,
                   f"caller {peer or '(no SPIFFE ID)'} is not an authorized broker")

    def attest(self, reference: Any, context: grpc.ServicerContext) -> tuple[str, ...]:
        if reference is None or not reference.HasField("reference"):
            _abort(context, grpc.StatusCode.INVALID_ARGUMENT,
                   "workload reference must be provided")
        any_ref = reference.reference
        if any_ref.type_url != PID_REFERENCE:
            _abort(context, grpc.StatusCode.PERMISSION_DENIED,
                   f"reference type {any_ref.type_url!r} is not allowed for this broker")
        pid_ref = api_pb2.WorkloadPIDReference()
        any_ref.Unpack(pid_ref)
        if pid_ref.pid <= 0:
            _abort(context, grpc.StatusCode.INVALID_ARGUMENT, "pid must be positive")
        uid = _uid_of(self._proc, pid_ref.pid)
        if uid is None:
            _abort(context, grpc.StatusCode.NOT_FOUND, f"no process {pid_ref.pid}")
        return self._registrations.get(uid, ())

    def bundles(self) -> dict[str, bytes]:
        jwks = self.authority.jwks(use="jwt-svid")
        return {f"spiffe://{self.authority.trust_domain}":
                json.dumps(jwks, separators=(",", ":")).encode()}

    @property
    def stopping(self) -> threading.Event:
        return self._stopping


class _Servicer(api_pb2_grpc.APIServicer):  # type: ignore[misc]
    def __init__(self, server: BrokerServer) -> None:
        self._server = server

    def FetchJWTSVID(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        s = self._server
        s.admit(context)
        if not request.audience:
            _abort(context, grpc.StatusCode.INVALID_ARGUMENT, "audience must be specified")
        ids = s.attest(request.reference, context)
        if request.spiffe_id:
            ids = tuple(i for i in ids if i == request.spiffe_id)
        if not ids:
            _abort(context, grpc.StatusCode.PERMISSION_DENIED, "no identity issued")
        return api_pb2.FetchJWTSVIDResponse(svids=[
            api_pb2.JWTSVID(spiffe_id=i, svid=s.authority.mint(i, list(request.audience),
                                                               s.svid_ttl)) for i in ids])

    def SubscribeToJWTBundles(self, request: Any,  # noqa: N802
                              context: grpc.ServicerContext) -> Iterator[Any]:
        s = self._server
        s.admit(context)
        s.attest(request.reference, context)
        version = -1
        while context.is_active() and not s.stopping.is_set():
            if s.authority.version != version:
                version = s.authority.version
                yield api_pb2.SubscribeToJWTBundlesResponse(bundles=s.bundles())
            s.stopping.wait(0.5)


def _serving_svid(ca: DevCa | X509Authority, agent_id: str) -> Svid:
    if isinstance(ca, DevCa):
        return ca.issue(agent_id, hours=24)
    issued = ca.mint(agent_id, ttl=24 * 3600)
    return Svid(tuple(x509.load_der_x509_certificate(c) for c in issued.chain),
                issued.private_key)


def _roots_pem(ca: DevCa | X509Authority) -> bytes:
    return ca.pem if isinstance(ca, DevCa) else ca.bundle_pem()


def _peer_spiffe_id(context: grpc.ServicerContext) -> str | None:
    pems = context.auth_context().get("x509_pem_cert") or []
    if not pems:
        return None
    leaf = x509.load_pem_x509_certificate(pems[0])
    try:
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    return uris[0] if len(uris) == 1 else None


def _uid_of(proc: Path, pid: int) -> int | None:
    """The effective uid of `pid` (`Uid:` real, effective, saved, fs), as SPIRE's unix
    attestor reads it."""
    try:
        text = (proc / str(pid) / "status").read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("Uid:"):
            fields = line.split()
            return int(fields[2]) if len(fields) > 2 else None
    return None
