"""IAM Roles Anywhere `CreateSession`, validated as AWS does. DEVELOPMENT ONLY.

`POST /sessions` on the STS emulator's port (its one route outside STS's query
protocol). The checks run in this order, each with AWS's error code (restJson:
`x-amzn-ErrorType` and `{"message"}`):

1. the `Authorization: AWS4-X509-{ECDSA,RSA}-SHA256 Credential=<serial>/<date>/<region>/
   rolesanywhere/aws4_request, SignedHeaders=..., Signature=<hex>` header, `X-Amz-Date`,
   `X-Amz-X509` (and `X-Amz-X509-Chain`) present and signed   -> AccessDeniedException
2. the credential's serial is the leaf's, the date within 5 minutes of the clock, the
   algorithm the leaf key's, and the signature verifies over the canonical request
   with the leaf's public key                                 -> AccessDeniedException
3. the JSON body (`trustAnchorArn`, `profileArn`, `roleArn`, `durationSeconds`
   900..43200)                                                -> ValidationException
4. the trust anchor and profile exist                         -> ResourceNotFoundException
5. every certificate is within its validity                   -> AccessDeniedException
   ("Certificate is expired" / "... not yet valid")
6. a chain from the leaf through the intermediates to one of the trust anchor's CAs
                                                 -> AccessDeniedException "Untrusted
                                                    signing certificate" (AWS's text)
7. the profile is enabled and lists the role                  -> AccessDeniedException
8. the role trusts rolesanywhere.amazonaws.com with its conditions: the leaf's SAN URI
   (`aws:PrincipalTag/x509SAN/URI`, StringLike) and the trust anchor (`aws:SourceArn`)
                                                 -> AccessDeniedException "Unable to
                                                    assume role for <arn>" (AWS's text)
9. `roleSessionName` only when the profile accepts it         -> AccessDeniedException
10. min(profile, request) duration within the role's maximum  -> ValidationException

The session is issued into the STS emulator's `SessionStore`, so it signs AssumeRole and
GetCallerIdentity there like any session. Expiration = now + min(profile duration,
requested duration), as AWS documents it (not capped by the certificate's notAfter).
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import re
import threading
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, quote, unquote

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from bridge.devstack._http import HttpRequest, HttpResponse, http_date
from bridge.devstack.aws.ids import new_role_id
from bridge.devstack.aws.roles import DEFAULT_MAX_SESSION_DURATION, ROLE_ARN, TrustedRole
from bridge.devstack.aws.sessions import SessionStore
from bridge.devstack.faults import FaultSwitches, HttpFailure
from bridge.devstack.globs import string_like

CREATE_SESSION = "CreateSession"  # the fault-switch key
SERVICE_PRINCIPAL = "rolesanywhere.amazonaws.com"
SIGNATURE_WINDOW = 5 * 60
_AMZ_DATE = "%Y%m%dT%H%M%SZ"
_AUTHORIZATION = re.compile(
    r"(?P<alg>AWS4-X509-(?:ECDSA|RSA)-SHA256)\s+Credential=(?P<serial>\d+)/"
    r"(?P<scope>(?P<date>\d{8})/(?P<region>[a-z0-9-]+)/(?P<service>[a-z0-9-]+)/aws4_request)"
    r"\s*,\s*SignedHeaders=(?P<signed>[a-z0-9;_.-]+)\s*,\s*Signature=(?P<signature>[0-9a-f]+)",
    re.ASCII)
UNTRUSTED = "Untrusted signing certificate"
INVALID_SIGNATURE = "Invalid signature"


class RolesAnywhereError(Exception):
    """A CreateSession refusal: HTTP status, AWS's error type and message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.status = status
        self.code = code
        self.message = message


def _denied(message: str) -> RolesAnywhereError:
    return RolesAnywhereError(403, "AccessDeniedException", message)


def _invalid(message: str) -> RolesAnywhereError:
    return RolesAnywhereError(400, "ValidationException", message)


@dataclass(frozen=True, slots=True)
class TrustAnchor:
    arn: str
    authorities: tuple[x509.Certificate, ...] = field(repr=False)
    enabled: bool = True


@dataclass(frozen=True, slots=True)
class Profile:
    arn: str
    role_arns: tuple[str, ...]
    duration_seconds: int = 3600
    enabled: bool = True
    accept_role_session_name: bool = False


@dataclass(frozen=True, slots=True)
class AnywhereRole:
    """A role whose trust policy names rolesanywhere.amazonaws.com; `san_uri` is a
    StringLike condition on aws:PrincipalTag/x509SAN/URI, `trust_anchor_arn` one on
    aws:SourceArn (None: no condition)."""

    role: TrustedRole
    san_uri: str | None = None
    trust_anchor_arn: str | None = None


@dataclass(frozen=True, slots=True)
class RecordedSession:
    """One CreateSession as received (headers hold certificates, not secrets)."""

    headers: dict[str, str] = field(repr=False)
    body: bytes = field(repr=False)
    code: str  # "" when it succeeded


class RolesAnywhere:
    """Trust anchors, profiles and roles of one account and region. Thread-safe."""

    def __init__(self, sessions: SessionStore, clock: Callable[[], float], *,
                 date_clock: Callable[[], float] | None = None,
                 faults: FaultSwitches[HttpFailure] | None = None,
                 region: str = "us-east-1", account: str = "111122223333") -> None:
        self._sessions = sessions
        self._clock = clock
        self._date_clock = date_clock or clock
        self._faults = faults
        self.region = region
        self.account = account
        self._lock = threading.Lock()
        self._anchors: dict[str, TrustAnchor] = {}
        self._profiles: dict[str, Profile] = {}
        self._roles: dict[str, AnywhereRole] = {}
        self.requests: list[RecordedSession] = []

    # -- configuration -----------------------------------------------------------------

    def add_trust_anchor(self, authorities: Iterable[x509.Certificate | bytes], *,
                         enabled: bool = True, arn: str | None = None) -> str:
        """Register (or replace, by `arn`) a trust anchor of these CA certificates (DER
        bytes, PEM bytes or parsed); returns its ARN."""
        certs = tuple(_load(a) for a in authorities)
        if not certs:
            raise ValueError("a trust anchor needs at least one CA certificate")
        arn = arn or (f"arn:aws:rolesanywhere:{self.region}:{self.account}:trust-anchor/"
                      f"{uuid.uuid4()}")
        with self._lock:
            self._anchors[arn] = TrustAnchor(arn, certs, enabled)
        return arn

    def add_profile(self, role_arns: Sequence[str], *, duration_seconds: int = 3600,
                    enabled: bool = True, accept_role_session_name: bool = False) -> str:
        arn = f"arn:aws:rolesanywhere:{self.region}:{self.account}:profile/{uuid.uuid4()}"
        with self._lock:
            self._profiles[arn] = Profile(arn, tuple(role_arns), duration_seconds, enabled,
                                          accept_role_session_name)
        return arn

    def add_role(self, role_arn: str, *, san_uri: str | None = None,
                 trust_anchor_arn: str | None = None,
                 max_session_duration: int = DEFAULT_MAX_SESSION_DURATION) -> TrustedRole:
        """A role trusting Roles Anywhere (sts:AssumeRole, TagSession, SetSourceIdentity)."""
        if ROLE_ARN.fullmatch(role_arn) is None:
            raise ValueError(f"not an IAM role ARN: {role_arn!r}")
        role = TrustedRole(arn=role_arn, provider_url=None, aud=None, sub=None,
                           max_session_duration=max_session_duration, role_id=new_role_id())
        with self._lock:
            self._roles[role_arn] = AnywhereRole(role, san_uri, trust_anchor_arn)
        return role

    # -- the wire ----------------------------------------------------------------------

    def handle(self, request: HttpRequest) -> HttpResponse:
        try:
            document = self._create_session(request)
        except RolesAnywhereError as err:
            self._record(request, err.code)
            return self._reply(err.status, {"message": err.message},
                               {"x-amzn-ErrorType": f"{err.code}:"})
        self._record(request, "")
        return self._reply(201, document, {})

    def _record(self, request: HttpRequest, code: str) -> None:
        with self._lock:
            self.requests.append(RecordedSession(dict(request.headers), request.body, code))

    def _reply(self, status: int, document: object, headers: dict[str, str]) -> HttpResponse:
        return HttpResponse(status, json.dumps(document).encode(), {
            "Content-Type": "application/json", "x-amzn-RequestId": str(uuid.uuid4()),
            "Date": http_date(self._date_clock()), **headers})

    def _create_session(self, request: HttpRequest) -> dict[str, Any]:
        failure = self._faults.before(CREATE_SESSION) if self._faults else None
        if failure is not None:
            raise RolesAnywhereError(failure.status or 500, failure.code,
                                     failure.message or failure.code)
        if request.method != "POST" or request.path != "/sessions":
            raise RolesAnywhereError(404, "UnknownOperationException", "Unknown operation")
        now = self._clock()
        headers = {k.lower(): v for k, v in request.headers.items()}
        leaf, chain = _authenticate(request, headers, now)
        body = _body(request.body)
        with self._lock:
            anchor = self._anchors.get(body["trustAnchorArn"])
            profile = self._profiles.get(body["profileArn"])
            trusted = self._roles.get(body["roleArn"])
        if anchor is None or not anchor.enabled:
            raise RolesAnywhereError(404, "ResourceNotFoundException", "Trust anchor not found")
        if profile is None:
            raise RolesAnywhereError(404, "ResourceNotFoundException", "Profile not found")
        _check_validity([leaf, *chain], now)
        if not chains_to(leaf, chain, anchor.authorities):
            raise _denied(UNTRUSTED)
        if not profile.enabled:
            raise _denied("Profile is not enabled")
        role_arn = body["roleArn"]
        if role_arn not in profile.role_arns:
            raise _denied(f"Role {role_arn} is not allowed by the profile")
        uri = san_uri(leaf)
        if trusted is None or not _trusts(trusted, uri, anchor.arn):
            raise _denied(f"Unable to assume role for {role_arn}")
        session_name = body.get("roleSessionName")
        if session_name is not None and not profile.accept_role_session_name:
            raise _denied("Not authorized to set roleSessionName.")
        requested = body.get("durationSeconds")
        final = min(profile.duration_seconds, requested or profile.duration_seconds)
        if final > trusted.role.max_session_duration:
            raise _invalid("The requested DurationSeconds exceeds the MaxSessionDuration "
                           "set for this role.")
        serial = format(leaf.serial_number, "x")
        issued = self._sessions.issue(trusted.role, str(session_name or serial), uri or serial,
                                      expires=int(now) + int(final))
        return {
            "credentialSet": [{
                "assumedRoleUser": {"arn": issued.assumed_role_arn,
                                    "assumedRoleId": issued.assumed_role_id},
                "credentials": {
                    "accessKeyId": issued.access_key_id,
                    "secretAccessKey": issued.secret_access_key,
                    "sessionToken": issued.session_token,
                    "expiration": issued.expiration.strftime("%Y-%m-%dT%H:%M:%SZ")},
                "packedPolicySize": 0,
                "roleArn": role_arn,
                "sourceIdentity": _common_name(leaf) or serial,
            }],
            "subjectArn": f"arn:aws:rolesanywhere:{self.region}:{self.account}:subject/"
                          f"{uuid.uuid5(uuid.NAMESPACE_URL, uri or serial)}",
        }


def _authenticate(request: HttpRequest, headers: dict[str, str], now: float
                  ) -> tuple[x509.Certificate, list[x509.Certificate]]:
    """Checks 1 and 2 of the module docstring: the leaf and intermediates that signed."""
    match = _AUTHORIZATION.fullmatch(headers.get("authorization", "").strip())
    if match is None:
        raise _denied("Missing or malformed Authorization header")
    signed = match.group("signed").split(";")
    required = {"host", "x-amz-date", "x-amz-x509"} | (
        {"x-amz-x509-chain"} if "x-amz-x509-chain" in headers else set())
    if not required <= set(signed) or any(n not in headers for n in signed):
        raise _denied(f"{INVALID_SIGNATURE}: host, x-amz-date, x-amz-x509 (and "
                      "x-amz-x509-chain) must be signed")
    try:
        leaf = x509.load_der_x509_certificate(_b64(headers.get("x-amz-x509", "")))
        chain = [x509.load_der_x509_certificate(_b64(part))
                 for part in headers.get("x-amz-x509-chain", "").split(",") if part]
    except ValueError:
        raise _denied("Unable to parse the X-Amz-X509 certificate or chain") from None
    if match.group("serial") != str(leaf.serial_number):
        raise _denied(f"{INVALID_SIGNATURE}: credential serial number does not match the "
                      "certificate")
    if match.group("service") != "rolesanywhere":
        raise _denied(f"{INVALID_SIGNATURE}: credential should be scoped to rolesanywhere")
    amz_date = headers.get("x-amz-date", "")
    try:
        signed_at = datetime.strptime(amz_date, _AMZ_DATE).replace(tzinfo=UTC).timestamp()
    except ValueError:
        raise _denied(f"{INVALID_SIGNATURE}: malformed X-Amz-Date") from None
    if not amz_date.startswith(match.group("date")):
        raise _denied(f"{INVALID_SIGNATURE}: date in credential scope does not match")
    if abs(signed_at - now) > SIGNATURE_WINDOW:
        raise _denied("Signature expired: the request time is more than 5 minutes from "
                      "the server's")
    key = leaf.public_key()
    kind = "ECDSA" if isinstance(key, ec.EllipticCurvePublicKey) else (
        "RSA" if isinstance(key, rsa.RSAPublicKey) else "")
    if match.group("alg") != f"AWS4-X509-{kind}-SHA256":
        raise _denied(f"{INVALID_SIGNATURE}: algorithm does not match the certificate key")
    canonical = canonical_request(request, headers, signed)
    string_to_sign = "\n".join([match.group("alg"), amz_date, match.group("scope"),
                                hashlib.sha256(canonical.encode()).hexdigest()])
    try:
        signature = bytes.fromhex(match.group("signature"))
        if isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, string_to_sign.encode(), ec.ECDSA(hashes.SHA256()))
        else:
            assert isinstance(key, rsa.RSAPublicKey)
            key.verify(signature, string_to_sign.encode(), padding.PKCS1v15(), hashes.SHA256())
    except (InvalidSignature, ValueError):
        raise _denied(INVALID_SIGNATURE) from None
    return leaf, chain


def canonical_request(request: HttpRequest, headers: dict[str, str],
                      signed: Sequence[str]) -> str:
    """SigV4's canonical request of a request as received (`headers` lower-cased)."""
    canonical_uri = quote(unquote(request.path or "/"), safe="/-_.~")
    pairs = sorted((quote(k, safe="-_.~"), quote(v, safe="-_.~"))
                   for k, v in parse_qsl(request.query, keep_blank_values=True))
    canonical_headers = "".join(f"{n}:{' '.join(headers.get(n, '').split())}\n"
                                for n in signed)
    payload = headers.get("x-amz-content-sha256") or hashlib.sha256(request.body).hexdigest()
    return "\n".join([request.method, canonical_uri, "&".join(f"{k}={v}" for k, v in pairs),
                      canonical_headers, ";".join(signed), payload])


def _body(raw: bytes) -> dict[str, Any]:
    try:
        body = json.loads(raw or b"{}")
    except ValueError:
        raise _invalid("Request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise _invalid("Request body must be a JSON object")
    for name in ("trustAnchorArn", "profileArn", "roleArn"):
        if not isinstance(body.get(name), str) or not body[name]:
            raise _invalid(f"1 validation error detected: Value null at '{name}' failed to "
                           "satisfy constraint: Member must not be null")
    duration = body.get("durationSeconds")
    if duration is not None and (not isinstance(duration, int) or
                                 not 900 <= duration <= 43200):
        raise _invalid("1 validation error detected: Value at 'durationSeconds' failed to "
                       "satisfy constraint: Member must have value between 900 and 43200")
    return body


def _check_validity(certs: Sequence[x509.Certificate], now: float) -> None:
    for cert in certs:
        if cert.not_valid_after_utc.timestamp() <= now:
            raise _denied("Certificate is expired")
        if cert.not_valid_before_utc.timestamp() > now:
            raise _denied("Certificate is not yet valid")


def chains_to(leaf: x509.Certificate, chain: Sequence[x509.Certificate],
               authorities: Sequence[x509.Certificate]) -> bool:
    """Whether leaf <- intermediates (in order) <- one of the anchor's CAs."""
    path = [leaf, *chain]
    for child, parent in itertools.pairwise(path):
        if not _issued_by(child, parent) or not _is_ca(parent):
            return False
    return any(_issued_by(path[-1], ca) for ca in authorities)


def _issued_by(child: x509.Certificate, parent: x509.Certificate) -> bool:
    try:
        child.verify_directly_issued_by(parent)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def san_uri(cert: x509.Certificate) -> str | None:
    try:
        uris = cert.extensions.get_extension_for_class(
            x509.SubjectAlternativeName).value.get_values_for_type(x509.UniformResourceIdentifier)
    except x509.ExtensionNotFound:
        return None
    return uris[0] if uris else None


def _common_name(cert: x509.Certificate) -> str:
    names = cert.subject.get_attributes_for_oid(x509.oid.NameOID.COMMON_NAME)
    return str(names[0].value) if names else ""


def _trusts(trusted: AnywhereRole, uri: str | None, anchor_arn: str) -> bool:
    if trusted.trust_anchor_arn is not None and trusted.trust_anchor_arn != anchor_arn:
        return False
    if trusted.san_uri is None:
        return True
    return uri is not None and string_like(trusted.san_uri).fullmatch(uri) is not None


def _b64(text: str) -> bytes:
    try:
        return base64.b64decode(text.strip(), validate=True)
    except ValueError:
        raise ValueError("not base64") from None


def _load(item: x509.Certificate | bytes) -> x509.Certificate:
    if isinstance(item, x509.Certificate):
        return item
    if item.lstrip().startswith(b"-----BEGIN"):
        return x509.load_pem_x509_certificate(item)
    return x509.load_der_x509_certificate(item)
