"""An AWS STS emulator: web identity, role chaining, caller identity. DEVELOPMENT ONLY.

moto accepts any token, so it cannot exercise the bridge's failure handling. This
emulator speaks STS's real query protocol (form-urlencoded `POST /`, `Version=2011-06-15`,
namespaced XML replies, `<ErrorResponse>` with AWS's codes and HTTP statuses) and
validates web identity tokens the way AWS documents it:

1. parameters: RoleArn, RoleSessionName `[\\w+=,.@-]{2,64}`, token 4..20000 chars,
   DurationSeconds 900..43200, Policy 1..2048 chars of JSON    -> ValidationError 400
2. the token is a JWS with alg RS/ES 256/384/512               -> InvalidIdentityToken 400
3. `iss` is a registered OIDC provider                        -> InvalidIdentityToken 400
4. the issuer's keys, found through its discovery document     -> IDPCommunicationError 400
5. the signature, with the key named by `kid`                  -> InvalidIdentityToken 400
6. `aud` holds one of the provider's client IDs                -> InvalidIdentityToken 400
7. integer `exp`, not in the past                              -> ExpiredTokenException 400
8. the role exists and trusts this provider, `aud` and `sub`   -> AccessDenied 403
9. DurationSeconds within the role's MaxSessionDuration        -> ValidationError 400

`AssumeRole` (role chaining) and `GetCallerIdentity` are SigV4-signed with credentials
this emulator issued. The signature is recomputed from the request as received (the
headers named in SignedHeaders, taken verbatim, including `Host`), so a request signed
for another host, e.g. `sts.us-east-1.amazonaws.com`, verifies when it is replayed here
with its original `Host` header: that is how the GCP emulator checks google-auth's
`aws4_request` subject tokens. Authentication is checked in this order:

1. an `Authorization: AWS4-HMAC-SHA256 ...` header   -> MissingAuthenticationToken 403 /
                                                        IncompleteSignature 400
2. the access key was issued here, and `x-amz-security-token` is its session token
                                                     -> InvalidClientTokenId 403
3. the session has not expired                       -> ExpiredToken 400
4. scope service `sts`, `x-amz-date` within 15 min of the emulator's clock, and the
   recomputed signature                              -> SignatureDoesNotMatch 403

AssumeRole then needs a role whose `trusted_principals` match the caller (its role
ARN, its assumed-role ARN, or `arn:aws:iam::<account>:root`; `*`/`?` globs allowed) and,
when the role sets one, the same ExternalId (else AccessDenied 403). Every caller is
a role session, so DurationSeconds > 3600 is the role-chaining ValidationError.

The JWKS is fetched over real HTTP (no proxies, short timeout), cached per issuer
and refetched once when a token names an unknown `kid`. Received requests are
recorded for assertions (`requests`); tokens and secrets are kept in memory only,
hidden from repr and never logged. `faults` (keyed by Action) injects failures
such as (503, "ServiceUnavailable") or (400, "Throttling") and latency.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import re
import secrets
import string
import threading
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, quote, unquote

from bridge.devstack._emulator import RecordingEmulator
from bridge.devstack._http import HttpRequest, HttpResponse, form_fields, http_date
from bridge.devstack.globs import string_like
from bridge.devstack.jwks import (
    IssuerKeys,
    IssuerUnreachableError,
    JsonFetcher,
    fetch_json,
    signature_valid,
)

_log = logging.getLogger(__name__)

STS_NAMESPACE = "https://sts.amazonaws.com/doc/2011-06-15/"
STS_VERSION = "2011-06-15"
ASSUME_ROLE_WITH_WEB_IDENTITY = "AssumeRoleWithWebIdentity"
ASSUME_ROLE = "AssumeRole"
GET_CALLER_IDENTITY = "GetCallerIdentity"

MIN_DURATION = 900
MAX_DURATION = 43200
DEFAULT_DURATION = 3600
DEFAULT_MAX_SESSION_DURATION = 3600
CHAINED_MAX_DURATION = 3600  # AWS caps sessions assumed with role-session credentials
SIGNATURE_WINDOW = 15 * 60  # how far x-amz-date may be from the emulator's clock

_ALLOWED_ALGS = frozenset({"RS256", "RS384", "RS512", "ES256", "ES384", "ES512"})
_SESSION_NAME = re.compile(r"[\w+=,.@-]{2,64}", re.ASCII)
_EXTERNAL_ID = re.compile(r"[\w+=,.@:/-]{2,1224}", re.ASCII)
_AUTHORIZATION = re.compile(
    r"AWS4-HMAC-SHA256\s+Credential=(?P<key>[^/\s,]+)/(?P<scope>\d{8}/[^/\s,]+/[^/\s,]+/aws4_request)"
    r"\s*,\s*SignedHeaders=(?P<signed>[a-z0-9;_.-]+)\s*,\s*Signature=(?P<signature>[0-9a-f]{64})",
    re.ASCII,
)
_ROLE_ARN = re.compile(
    r"arn:aws[a-z-]*:iam::(?P<account>\d{12}):role/(?:[\w+=,.@-]+/)*(?P<name>[\w+=,.@-]{1,64})",
    re.ASCII,
)
_UPPER_ALNUM = string.ascii_uppercase + string.digits
_SECRET_ALPHABET = string.ascii_letters + string.digits + "+/"

NOT_AUTHORIZED = "Not authorized to perform sts:AssumeRoleWithWebIdentity"
CHAINED_DURATION_EXCEEDED = (
    "The requested DurationSeconds exceeds the 1 hour session limit for roles assumed by "
    "role chaining."
)
SIGNATURE_MISMATCH = (
    "The request signature we calculated does not match the signature you provided. "
    "Check your AWS Secret Access Key and signing method. Consult the service "
    "documentation for details."
)
IDP_UNREACHABLE = (
    "Couldn't retrieve verification key from your identity provider,  please reference "
    "AssumeRoleWithWebIdentity documentation for requirements"
)

# Default HTTP status and message per error code, used by fault switches given only a code.
_KNOWN_ERRORS: Mapping[str, tuple[int, str]] = {
    "AccessDenied": (403, NOT_AUTHORIZED),
    "ExpiredToken": (400, "The security token included in the request is expired"),
    "ExpiredTokenException": (400, "Token expired"),
    "IDPCommunicationError": (400, IDP_UNREACHABLE),
    "IDPRejectedClaim": (403, "The identity provider rejected the claim"),
    "IncompleteSignature": (
        400,
        "Authorization header requires 'Credential', 'SignedHeaders' and 'Signature' parameters",
    ),
    "InternalFailure": (500, "An internal error occurred"),
    "InvalidAction": (400, "Could not find operation for version 2011-06-15"),
    "InvalidClientTokenId": (403, "The security token included in the request is invalid."),
    "InvalidIdentityToken": (400, "The web identity token is not valid"),
    "MalformedPolicyDocument": (400, "The policy is not in the valid JSON format"),
    "MissingAuthenticationToken": (403, "Request is missing Authentication Token"),
    "RegionDisabledException": (403, "STS is not activated in this region"),
    "ServiceUnavailable": (503, "Service is unavailable, please try again later"),
    "SignatureDoesNotMatch": (403, SIGNATURE_MISMATCH),
    "Throttling": (400, "Rate exceeded"),
    "ValidationError": (400, "1 validation error detected"),
}

def _random(alphabet: str, length: int) -> str:
    return "".join(secrets.choice(alphabet) for _ in range(length))


def _normalize_provider_url(url: str) -> str:
    url = url.strip().rstrip("/")
    return url if "://" in url else f"https://{url}"


@dataclass(frozen=True, slots=True)
class OidcProvider:
    """An IAM OIDC identity provider: issuer URL and accepted client IDs (audiences)."""

    url: str
    client_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class TrustedRole:
    """An IAM role: whom its trust policy allows, with optional conditions.

    Web identity: `provider_url` (None: no OIDC provider is trusted); `aud` is matched
    exactly (StringEquals); `sub` exactly, or as a StringLike glob when it contains `*`
    or `?`. None means no condition on that key. Role chaining: `trusted_principals`
    (role, assumed-role or account-root ARNs, globs allowed) and an optional
    `sts:ExternalId` condition.
    """

    arn: str
    provider_url: str | None
    aud: str | None
    sub: str | None
    max_session_duration: int
    role_id: str
    trusted_principals: tuple[str, ...] = ()
    external_id: str | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        """The role name (last path segment of the ARN)."""
        match = _ROLE_ARN.fullmatch(self.arn)
        assert match is not None  # checked by add_role
        return match.group("name")

    @property
    def account(self) -> str:
        """The 12-digit account ID."""
        match = _ROLE_ARN.fullmatch(self.arn)
        assert match is not None  # checked by add_role
        return match.group("account")

    def trusts(self, aud: Iterable[str], sub: str) -> bool:
        """Whether the trust-policy conditions hold for these claims."""
        if self.aud is not None and self.aud not in set(aud):
            return False
        if self.sub is None:
            return True
        if "*" in self.sub or "?" in self.sub:
            return string_like(self.sub).fullmatch(sub) is not None
        return sub == self.sub

    def trusts_session(self, caller: IssuedCredentials) -> bool:
        """Whether an AWS principal in the trust policy covers this role session.

        A role ARN trusts every session of that role (as in IAM); `:root` the account.
        """
        names = (caller.role_arn, caller.assumed_role_arn)
        for pattern in self.trusted_principals:
            if pattern == f"arn:aws:iam::{caller.account}:root":
                return True
            if any(string_like(pattern).fullmatch(name) for name in names):
                return True
        return False


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """One request as received. `params` holds the token: never print it."""

    method: str
    path: str
    action: str
    params: Mapping[str, str] = field(repr=False)
    headers: Mapping[str, str] = field(repr=False)
    received_at: float


@dataclass(frozen=True, slots=True)
class IssuedCredentials:
    """Temporary credentials the emulator handed out (secrets hidden from repr).

    `subject` is the web identity token's `sub`, or for AssumeRole the caller's
    assumed-role ARN; `assumed_role_id` is GetCallerIdentity's UserId.
    """

    access_key_id: str
    secret_access_key: str = field(repr=False)
    session_token: str = field(repr=False)
    expiration: datetime
    role_arn: str
    assumed_role_arn: str
    session_name: str
    subject: str
    assumed_role_id: str = ""

    @property
    def account(self) -> str:
        """The 12-digit account of the role."""
        match = _ROLE_ARN.fullmatch(self.role_arn)
        return match.group("account") if match else ""


class StsError(Exception):
    """An STS error reply: HTTP status, AWS error code and message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.status = status
        self.code = code
        self.message = message

    @classmethod
    def of(cls, code: str, message: str | None = None) -> StsError:
        """An error with the code's usual status (400 if unknown) and message."""
        status, default = _KNOWN_ERRORS.get(code, (400, code))
        return cls(status, code, message or default)


@dataclass(frozen=True, slots=True)
class _ParsedToken:
    header: Mapping[str, Any]
    claims: Mapping[str, Any]


ActionHandler = Callable[[Mapping[str, str], HttpRequest], ET.Element]


class AwsStsEmulator(RecordingEmulator[RecordedRequest]):
    """STS on `http://127.0.0.1:<port>`: providers, roles, validation, recording. Thread-safe."""

    def __init__(
        self,
        *,
        port: int = 0,
        clock: Callable[[], float] = time.time,
        fetch: JsonFetcher = fetch_json,
        idp_timeout: float = 2.0,
        jwks_cache_seconds: float = 60.0,
    ) -> None:
        """Prepare the emulator; nothing listens until `start()`.

        `clock` drives `exp` checks, credential expiry and the `Date` header, so a test
        can play clock skew; `fetch` is how discovery documents and JWKS are read.
        """
        self._clock = clock
        self._idp_timeout = idp_timeout
        self._lock = threading.Lock()
        self._providers: dict[str, OidcProvider] = {}
        self._roles: dict[str, TrustedRole] = {}
        self._issued: list[IssuedCredentials] = []
        self._sessions: dict[str, IssuedCredentials] = {}
        self._keys = IssuerKeys(fetch, timeout=idp_timeout, cache_seconds=jwks_cache_seconds)
        self._actions: dict[str, ActionHandler] = {
            ASSUME_ROLE_WITH_WEB_IDENTITY: self._assume_role_with_web_identity,
            ASSUME_ROLE: self._assume_role,
            GET_CALLER_IDENTITY: self._get_caller_identity,
        }
        super().__init__(port=port, name="devstack-aws-sts")

    # -- lifecycle -------------------------------------------------------------------


    # -- account configuration ---------------------------------------------------------

    def register_oidc_provider(self, url: str, client_ids: Iterable[str]) -> OidcProvider:
        """Register (or replace) an IAM OIDC provider for issuer `url`.

        Raises:
            ValueError: no client IDs.
        """
        ids = tuple(client_ids)
        if isinstance(client_ids, str) or not ids:
            raise ValueError("client_ids must be a non-empty list of strings")
        provider = OidcProvider(_normalize_provider_url(url), ids)
        with self._lock:
            self._providers[provider.url] = provider
            self._keys.forget(provider.url)
        return provider

    def add_role(
        self,
        role_arn: str,
        *,
        provider_url: str | None = None,
        aud: str | None = None,
        sub: str | None = None,
        max_session_duration: int = DEFAULT_MAX_SESSION_DURATION,
        trusted_principals: Iterable[str] = (),
        external_id: str | None = None,
    ) -> TrustedRole:
        """Create (or replace) a role trusting an OIDC provider and/or AWS principals.

        `provider_url` with `aud`/`sub` conditions is for AssumeRoleWithWebIdentity;
        `trusted_principals` (role, assumed-role or `arn:aws:iam::<acct>:root` ARNs,
        `*`/`?` globs allowed) and `external_id` are for AssumeRole.

        Raises:
            ValueError: malformed role ARN, max_session_duration outside 3600..43200,
                nobody trusted, a principal that is not an ARN, or a malformed external ID.
        """
        if _ROLE_ARN.fullmatch(role_arn) is None:
            raise ValueError(f"not an IAM role ARN: {role_arn!r}")
        if not DEFAULT_MAX_SESSION_DURATION <= max_session_duration <= MAX_DURATION:
            raise ValueError(
                f"max_session_duration must be within 3600..43200, got {max_session_duration}"
            )
        principals = (
            (trusted_principals,)
            if isinstance(trusted_principals, str)
            else tuple(trusted_principals)
        )
        if provider_url is None and not principals:
            raise ValueError("a role must trust an OIDC provider or AWS principals")
        if any(not p.startswith("arn:aws") for p in principals):
            raise ValueError(f"trusted principals must be ARNs: {principals!r}")
        if external_id is not None and _EXTERNAL_ID.fullmatch(external_id) is None:
            raise ValueError("external_id must be 2..1224 characters of [\\w+=,.@:/-]")
        role = TrustedRole(
            arn=role_arn,
            provider_url=None if provider_url is None else _normalize_provider_url(provider_url),
            aud=aud,
            sub=sub,
            max_session_duration=max_session_duration,
            role_id="AROA" + _random(_UPPER_ALNUM, 17),
            trusted_principals=principals,
            external_id=external_id,
        )
        with self._lock:
            self._roles[role_arn] = role
        return role

    @property
    def providers(self) -> Mapping[str, OidcProvider]:
        """Registered OIDC providers by normalized URL (a snapshot)."""
        with self._lock:
            return dict(self._providers)

    @property
    def roles(self) -> Mapping[str, TrustedRole]:
        """Roles by ARN (a snapshot)."""
        with self._lock:
            return dict(self._roles)

    def clear_jwks_cache(self) -> None:
        """Forget every cached JWKS (the next token refetches its issuer's keys)."""
        self._keys.forget()

    # -- observations --------------------------------------------------------------------

    @property
    def issued(self) -> tuple[IssuedCredentials, ...]:
        """Every set of credentials handed out, oldest first."""
        with self._lock:
            return tuple(self._issued)

    # -- the wire --------------------------------------------------------------------------

    def handle(self, request: HttpRequest) -> HttpResponse:
        """Answer one HTTP request (public so tests can call it without a socket)."""
        request_id = str(uuid.uuid4())
        params = self._params(request)
        action = params.get("Action", "")
        self._record(
            RecordedRequest(
                method=request.method,
                path=request.path,
                action=action,
                params=params,
                headers=dict(request.headers),
                received_at=self._clock(),
            )
        )
        try:
            result = self._dispatch(action, params, request)
        except StsError as err:
            _log.debug("sts %s -> %s", action or "-", err.code)
            return self._reply(err.status, _error_document(err, request_id), request_id)
        _log.debug("sts %s -> ok", action)
        return self._reply(200, _response_document(action, result, request_id), request_id)

    def _dispatch(self, action: str, params: Mapping[str, str], request: HttpRequest) -> ET.Element:
        """Fault switches, then routing; raises StsError for every error reply."""
        failure = self.faults.before(action)
        if failure is not None:
            default_status, default_message = _KNOWN_ERRORS.get(failure.code, (0, ""))
            raise StsError(
                failure.status or default_status or 400,
                failure.code,
                failure.message or default_message or failure.code,
            )
        if request.path != "/" or request.method not in ("GET", "POST"):
            raise StsError(404, "NotFound", "Not Found")
        if not action:
            raise StsError(400, "MissingAction", "Missing Action")
        handler = self._actions.get(action)
        if handler is None or params.get("Version") != STS_VERSION:
            raise StsError.of(
                "InvalidAction",
                f"Could not find operation {action} for version {params.get('Version', '')}",
            )
        return handler(params, request)

    @staticmethod
    def _params(request: HttpRequest) -> dict[str, str]:
        body = request.body.decode("utf-8", "replace") if request.method == "POST" else ""
        return form_fields(request.query, body)

    def _reply(self, status: int, document: ET.Element, request_id: str) -> HttpResponse:
        body = ET.tostring(document, encoding="utf-8", xml_declaration=False)
        headers = {
            "Content-Type": "text/xml",
            "x-amzn-RequestId": request_id,
            "Date": http_date(self._clock()),
        }
        return HttpResponse(status, body, headers)

    # -- AssumeRoleWithWebIdentity -----------------------------------------------------------

    def _assume_role_with_web_identity(
        self, params: Mapping[str, str], request: HttpRequest
    ) -> ET.Element:
        role_arn, session_name, token, duration, policy, _ = _validate_parameters(
            params, web_identity=True
        )
        parsed = _parse_token(token)
        issuer = parsed.claims.get("iss")
        provider = self._provider_for(issuer)
        self._verify_signature(token, parsed, provider)
        audience = _audiences(parsed.claims.get("aud"))
        matched_aud = next((a for a in audience if a in provider.client_ids), None)
        if matched_aud is None:
            raise StsError.of("InvalidIdentityToken", "Incorrect token audience")
        self._check_times(parsed.claims)
        sub = parsed.claims.get("sub")
        if not isinstance(sub, str) or not sub:
            raise StsError.of("InvalidIdentityToken", "The web identity token has no sub claim")
        with self._lock:
            role = self._roles.get(role_arn)
        if role is None or role.provider_url != provider.url or not role.trusts(audience, sub):
            raise StsError.of("AccessDenied", NOT_AUTHORIZED)
        if duration > role.max_session_duration:
            raise StsError.of(
                "ValidationError",
                "The requested DurationSeconds exceeds the MaxSessionDuration set for this role.",
            )
        credentials = self._issue(role, session_name, sub, duration)
        return _web_identity_result(
            credentials,
            role,
            subject=sub,
            audience=matched_aud,
            provider=str(issuer),
            packed_policy_size=None if policy is None else min(100, len(policy) * 100 // 2048),
        )

    def _provider_for(self, issuer: object) -> OidcProvider:
        if not isinstance(issuer, str) or not issuer:
            raise StsError.of("InvalidIdentityToken", "The web identity token has no iss claim")
        with self._lock:
            provider = self._providers.get(_normalize_provider_url(issuer))
        if provider is None:
            raise StsError.of(
                "InvalidIdentityToken",
                f"No OpenIDConnect provider found in your account for {issuer[:256]}",
            )
        return provider

    def _verify_signature(self, token: str, parsed: _ParsedToken, provider: OidcProvider) -> None:
        alg = str(parsed.header["alg"])
        kid = parsed.header.get("kid")
        try:
            candidates = self._keys.candidates(provider.url, kid if kid is None else str(kid))
        except IssuerUnreachableError as err:
            _log.debug("sts: cannot read keys of %s: %s", provider.url, err)
            raise StsError.of("IDPCommunicationError", IDP_UNREACHABLE) from err
        if not candidates:
            raise StsError.of(
                "InvalidIdentityToken", "No key in the identity provider's JWKS matches the token"
            )
        if not signature_valid(token, alg, candidates):
            raise StsError.of("InvalidIdentityToken", "The web identity token signature is invalid")

    def _check_times(self, claims: Mapping[str, Any]) -> None:
        exp = claims.get("exp")
        # AWS rejects non-integer timestamps (SPIRE changed its output for this reason).
        if isinstance(exp, bool) or not isinstance(exp, int):
            raise StsError.of("InvalidIdentityToken", "The web identity token has no valid exp")
        now = int(self._clock())
        if exp <= now:
            raise StsError.of(
                "ExpiredTokenException",
                f"Token expired: current date/time {now} must be before the expiration "
                f"date/time {exp}",
            )
        nbf = claims.get("nbf")
        if isinstance(nbf, int) and not isinstance(nbf, bool) and nbf > now:
            raise StsError.of("InvalidIdentityToken", "The web identity token is not yet valid")

    def _issue(
        self, role: TrustedRole, session_name: str, subject: str, duration: int
    ) -> IssuedCredentials:
        expires = int(self._clock()) + duration
        credentials = IssuedCredentials(
            access_key_id="ASIA" + _random(_UPPER_ALNUM, 16),
            secret_access_key=_random(_SECRET_ALPHABET, 40),
            session_token=base64.b64encode(secrets.token_bytes(300)).decode(),
            expiration=datetime.fromtimestamp(expires, UTC),
            role_arn=role.arn,
            assumed_role_arn=(
                f"arn:aws:sts::{role.account}:assumed-role/{role.name}/{session_name}"
            ),
            session_name=session_name,
            subject=subject,
            assumed_role_id=f"{role.role_id}:{session_name}",
        )
        with self._lock:
            self._issued.append(credentials)
            self._sessions[credentials.access_key_id] = credentials
        return credentials

    # -- SigV4-signed actions: AssumeRole, GetCallerIdentity -------------------------------

    def _assume_role(self, params: Mapping[str, str], request: HttpRequest) -> ET.Element:
        caller = self._authenticate(request)
        role_arn, session_name, _, duration, policy, external_id = _validate_parameters(
            params, web_identity=False
        )
        with self._lock:
            role = self._roles.get(role_arn)
        if (
            role is None
            or not role.trusts_session(caller)
            or (role.external_id is not None and external_id != role.external_id)
        ):
            raise StsError.of(
                "AccessDenied",
                f"User: {caller.assumed_role_arn} is not authorized to perform: "
                f"sts:AssumeRole on resource: {role_arn}",
            )
        # Every caller here holds role-session credentials, so this is role chaining.
        if duration > CHAINED_MAX_DURATION:
            raise StsError.of("ValidationError", CHAINED_DURATION_EXCEEDED)
        if duration > role.max_session_duration:
            raise StsError.of(
                "ValidationError",
                "The requested DurationSeconds exceeds the MaxSessionDuration set for this role.",
            )
        credentials = self._issue(role, session_name, caller.assumed_role_arn, duration)
        return _assume_role_result(
            credentials,
            packed_policy_size=None if policy is None else min(100, len(policy) * 100 // 2048),
        )

    def _get_caller_identity(self, params: Mapping[str, str], request: HttpRequest) -> ET.Element:
        caller = self._authenticate(request)
        result = ET.Element("GetCallerIdentityResult")
        _sub(result, "Arn", caller.assumed_role_arn)
        _sub(result, "UserId", caller.assumed_role_id)
        _sub(result, "Account", caller.account)
        return result

    def _authenticate(self, request: HttpRequest) -> IssuedCredentials:
        """The session whose credentials signed this request (SigV4, header form).

        Raises:
            StsError: in the order given in the module docstring.
        """
        headers = {name.lower(): value for name, value in request.headers.items()}
        authorization = headers.get("authorization", "")
        if not authorization:
            raise StsError.of("MissingAuthenticationToken")
        match = _AUTHORIZATION.fullmatch(authorization.strip())
        if match is None:
            raise StsError.of("IncompleteSignature")
        signed_headers = match.group("signed").split(";")
        if "host" not in signed_headers:
            raise StsError.of("IncompleteSignature", "'Host' must be a signed header")
        with self._lock:
            session = self._sessions.get(match.group("key"))
        presented_token = headers.get("x-amz-security-token", "")
        if session is None or not hmac.compare_digest(
            presented_token.encode(), session.session_token.encode()
        ):
            raise StsError.of("InvalidClientTokenId")
        now = self._clock()
        if session.expiration.timestamp() <= now:
            raise StsError.of("ExpiredToken")
        scope = match.group("scope")
        date_stamp, _region, service, _ = scope.split("/")
        if service != "sts":
            raise StsError.of(
                "SignatureDoesNotMatch", "Credential should be scoped to correct service: 'sts'."
            )
        amz_date = headers.get("x-amz-date", "")
        try:
            signed_at = datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
        except ValueError:
            raise StsError.of("IncompleteSignature", "Missing or malformed x-amz-date") from None
        if not amz_date.startswith(date_stamp):
            raise StsError.of("SignatureDoesNotMatch", "Date in Credential scope does not match")
        _check_signature_time(signed_at.timestamp(), now, amz_date)
        expected = sigv4_signature(
            session.secret_access_key,
            method=request.method,
            path=request.path,
            query=request.query,
            headers=headers,
            body=request.body,
            signed_headers=signed_headers,
            amz_date=amz_date,
            scope=scope,
        )
        if not hmac.compare_digest(expected, match.group("signature")):
            raise StsError.of("SignatureDoesNotMatch")
        return session


def _check_signature_time(signed_at: float, now: float, amz_date: str) -> None:
    def stamp(epoch: float) -> str:
        return datetime.fromtimestamp(epoch, UTC).strftime("%Y%m%dT%H%M%SZ")

    if signed_at < now - SIGNATURE_WINDOW:
        raise StsError.of(
            "SignatureDoesNotMatch",
            f"Signature expired: {amz_date} is now earlier than "
            f"{stamp(now - SIGNATURE_WINDOW)} ({stamp(now)} - 15 min.)",
        )
    if signed_at > now + SIGNATURE_WINDOW:
        raise StsError.of(
            "SignatureDoesNotMatch",
            f"Signature not yet current: {amz_date} is still later than "
            f"{stamp(now + SIGNATURE_WINDOW)} ({stamp(now)} + 15 min.)",
        )


def sigv4_signature(
    secret_access_key: str,
    *,
    method: str,
    path: str,
    query: str,
    headers: Mapping[str, str],
    body: bytes,
    signed_headers: Iterable[str],
    amz_date: str,
    scope: str,
) -> str:
    """The hex SigV4 signature of a request as received (AWS's canonical-request rules).

    `headers` must have lower-case names; `scope` is `date/region/service/aws4_request`.
    Values are trimmed and inner whitespace collapsed; the payload hash is
    `x-amz-content-sha256` when sent, else SHA-256 of the body.
    """
    names = list(signed_headers)
    canonical_uri = quote(unquote(path or "/"), safe="/-_.~")
    pairs = sorted(
        (quote(k, safe="-_.~"), quote(v, safe="-_.~"))
        for k, v in parse_qsl(query, keep_blank_values=True)
    )
    canonical_query = "&".join(f"{k}={v}" for k, v in pairs)
    canonical_headers = "".join(f"{n}:{' '.join(headers.get(n, '').split())}\n" for n in names)
    payload_hash = headers.get("x-amz-content-sha256") or hashlib.sha256(body).hexdigest()
    canonical_request = "\n".join(
        [method, canonical_uri, canonical_query, canonical_headers, ";".join(names), payload_hash]
    )
    string_to_sign = "\n".join(
        [
            "AWS4-HMAC-SHA256",
            amz_date,
            scope,
            hashlib.sha256(canonical_request.encode()).hexdigest(),
        ]
    )
    key = ("AWS4" + secret_access_key).encode()
    for part in scope.split("/"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return hmac.new(key, string_to_sign.encode(), hashlib.sha256).hexdigest()


# -- parameter and token parsing ----------------------------------------------------------


def _validate_parameters(
    params: Mapping[str, str], *, web_identity: bool
) -> tuple[str, str, str, int, str | None, str | None]:
    """Model constraints, reported together as AWS does.

    Returns RoleArn, RoleSessionName, WebIdentityToken ("" for AssumeRole),
    DurationSeconds, Policy and ExternalId (always None for web identity).
    """
    problems: list[str] = []

    def required(name: str, member: str, low: int, high: int) -> str:
        value = params.get(name)
        if value is None:
            problems.append(
                f"Value null at '{member}' failed to satisfy constraint: Member must not be null"
            )
            return ""
        if len(value) < low:
            problems.append(
                f"Value at '{member}' failed to satisfy constraint: "
                f"Member must have length greater than or equal to {low}"
            )
        elif len(value) > high:
            problems.append(
                f"Value at '{member}' failed to satisfy constraint: "
                f"Member must have length less than or equal to {high}"
            )
        return value

    role_arn = required("RoleArn", "roleArn", 20, 2048)
    session_name = required("RoleSessionName", "roleSessionName", 2, 64)
    if session_name and _SESSION_NAME.fullmatch(session_name) is None:
        problems.append(
            f"Value '{session_name[:64]}' at 'roleSessionName' failed to satisfy constraint: "
            r"Member must satisfy regular expression pattern: [\w+=,.@-]*"
        )
    token = required("WebIdentityToken", "webIdentityToken", 4, 20000) if web_identity else ""
    external_id = None if web_identity else params.get("ExternalId")
    if external_id is not None and _EXTERNAL_ID.fullmatch(external_id) is None:
        problems.append(
            "Value at 'externalId' failed to satisfy constraint: Member must have length "
            r"between 2 and 1224 and satisfy regular expression pattern: [\w+=,.@:\/-]*"
        )
    duration = DEFAULT_DURATION
    raw_duration = params.get("DurationSeconds")
    if raw_duration is not None:
        try:
            duration = int(raw_duration)
        except ValueError:
            problems.append(
                "Value at 'durationSeconds' failed to satisfy constraint: Member must be an integer"
            )
        else:
            if duration < MIN_DURATION:
                problems.append(
                    f"Value '{duration}' at 'durationSeconds' failed to satisfy "
                    f"constraint: Member must have value greater than or equal to "
                    f"{MIN_DURATION}"
                )
            elif duration > MAX_DURATION:
                problems.append(
                    f"Value '{duration}' at 'durationSeconds' failed to satisfy "
                    f"constraint: Member must have value less than or equal to "
                    f"{MAX_DURATION}"
                )
    policy = params.get("Policy")
    if policy is not None and not 1 <= len(policy) <= 2048:
        problems.append(
            "Value at 'policy' failed to satisfy constraint: "
            "Member must have length between 1 and 2048"
        )
    if problems:
        count = len(problems)
        noun = "error" if count == 1 else "errors"
        raise StsError.of(
            "ValidationError", f"{count} validation {noun} detected: " + "; ".join(problems)
        )
    if role_arn and _ROLE_ARN.fullmatch(role_arn) is None:
        raise StsError.of("ValidationError", "Request ARN is invalid")
    if policy is not None:
        try:
            json.loads(policy)
        except ValueError as err:
            raise StsError.of("MalformedPolicyDocument") from err
    return role_arn, session_name, token, duration, policy, external_id


def _b64_json(segment: str) -> Any:
    padded = segment + "=" * (-len(segment) % 4)
    return json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))


def _parse_token(token: str) -> _ParsedToken:
    """JWS compact form with an allowed alg; claims unverified."""
    parts = token.split(".")
    header: Any = None
    claims: Any = None
    if len(parts) == 3:
        try:
            header, claims = _b64_json(parts[0]), _b64_json(parts[1])
        except (ValueError, UnicodeError, binascii.Error) as err:
            raise StsError.of(
                "InvalidIdentityToken", "The web identity token is not a valid JWT"
            ) from err
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise StsError.of("InvalidIdentityToken", "The web identity token is not a valid JWT")
    alg = header.get("alg")
    if alg not in _ALLOWED_ALGS:
        raise StsError.of(
            "InvalidIdentityToken",
            f"Unsupported token signing algorithm: {str(alg)[:16]}",
        )
    return _ParsedToken(header=header, claims=claims)


def _audiences(aud: object) -> tuple[str, ...]:
    if isinstance(aud, str):
        return (aud,)
    if isinstance(aud, list):
        return tuple(a for a in aud if isinstance(a, str))
    return ()


# -- XML documents ---------------------------------------------------------------------------


def _sub(parent: ET.Element, tag: str, text: str | None = None) -> ET.Element:
    element = ET.SubElement(parent, tag)
    if text is not None:
        element.text = text
    return element


def _web_identity_result(
    credentials: IssuedCredentials,
    role: TrustedRole,
    *,
    subject: str,
    audience: str,
    provider: str,
    packed_policy_size: int | None,
) -> ET.Element:
    result = ET.Element("AssumeRoleWithWebIdentityResult")
    creds = _sub(result, "Credentials")
    _sub(creds, "AccessKeyId", credentials.access_key_id)
    _sub(creds, "SecretAccessKey", credentials.secret_access_key)
    _sub(creds, "SessionToken", credentials.session_token)
    _sub(creds, "Expiration", credentials.expiration.strftime("%Y-%m-%dT%H:%M:%SZ"))
    _sub(result, "SubjectFromWebIdentityToken", subject)
    user = _sub(result, "AssumedRoleUser")
    _sub(user, "AssumedRoleId", f"{role.role_id}:{credentials.session_name}")
    _sub(user, "Arn", credentials.assumed_role_arn)
    if packed_policy_size is not None:
        _sub(result, "PackedPolicySize", str(packed_policy_size))
    _sub(result, "Audience", audience)
    _sub(result, "Provider", provider)
    return result


def _assume_role_result(
    credentials: IssuedCredentials, *, packed_policy_size: int | None
) -> ET.Element:
    result = ET.Element("AssumeRoleResult")
    creds = _sub(result, "Credentials")
    _sub(creds, "AccessKeyId", credentials.access_key_id)
    _sub(creds, "SecretAccessKey", credentials.secret_access_key)
    _sub(creds, "SessionToken", credentials.session_token)
    _sub(creds, "Expiration", credentials.expiration.strftime("%Y-%m-%dT%H:%M:%SZ"))
    user = _sub(result, "AssumedRoleUser")
    _sub(user, "AssumedRoleId", credentials.assumed_role_id)
    _sub(user, "Arn", credentials.assumed_role_arn)
    if packed_policy_size is not None:
        _sub(result, "PackedPolicySize", str(packed_policy_size))
    return result


def _response_document(action: str, result: ET.Element, request_id: str) -> ET.Element:
    root = ET.Element(f"{action}Response", {"xmlns": STS_NAMESPACE})
    root.append(result)
    metadata = _sub(root, "ResponseMetadata")
    _sub(metadata, "RequestId", request_id)
    return root


def _error_document(err: StsError, request_id: str) -> ET.Element:
    root = ET.Element("ErrorResponse", {"xmlns": STS_NAMESPACE})
    error = _sub(root, "Error")
    _sub(error, "Type", "Sender" if err.status < 500 else "Receiver")
    _sub(error, "Code", err.code)
    _sub(error, "Message", err.message)
    _sub(root, "RequestId", request_id)
    return root
