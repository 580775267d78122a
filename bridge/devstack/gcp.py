"""A Google Cloud STS + IAM Credentials emulator. DEVELOPMENT ONLY.

One loopback HTTP server plays three Google endpoints, so google-auth itself can be
the client (`token_url` and the impersonation URL both accept `http://127.0.0.1:P`):

- `POST /v1/token` (sts.googleapis.com): RFC 8693 token exchange of a JWT (OIDC
  providers) or of an `aws4_request` subject token (AWS providers) for a federated
  access token. Errors are RFC 6749 JSON `{"error", "error_description"}`, HTTP 400.
- `POST /v1/projects/-/serviceAccounts/{email|id}:generateAccessToken` and
  `:generateIdToken` (iamcredentials.googleapis.com), `Authorization: Bearer` a token
  issued here. Errors are Google's JSON `{"error": {"code", "message", "status"}}`.
- `GET /google/.well-known/openid-configuration` and `/google/oauth2/v3/certs`: the
  discovery document and RS256 JWKS of the ID tokens minted by generateIdToken. Their
  `iss` is `<url>/google` (not accounts.google.com), so the AWS STS emulator can fetch
  the keys and trust the tokens in GCP->AWS chains.

OIDC subject tokens are checked as Google documents: JWS with `kid`, alg RS256 or
ES256, `iss` equal to the provider's issuer URI, signature against the issuer's JWKS
(discovery, or `jwks` uploaded with the provider), `aud` in the allowed audiences (or,
when none are set, the provider's resource name with or without `https:`), `exp` in
the future, `iat` not in the future (60 s leeway), `exp - iat` under 48 h, `sub`
present. `google.subject` is `sub` and must fit 127 bytes; then the attribute
condition runs (a callable on the claims, or a StringLike glob on `sub`).

`aws4_request` subject tokens are the URL-encoded JSON google-auth's `aws.Credentials`
builds: `{url, method, headers: [{key, value}], body?}`, a SigV4-signed
`POST https://sts.<region>.amazonaws.com?Action=GetCallerIdentity&Version=2011-06-15`.
Google verifies it by sending that request to AWS; this emulator sends it to the
provider's `sts_url` instead, same path, query, body and headers, including the
original `Host` (e.g. `sts.us-east-1.amazonaws.com`). SigV4 signs the Host header, not
the address connected to, so the signature still verifies wherever the request lands;
the AWS STS emulator recomputes it from the headers it receives. google-auth does
not sign `x-goog-cloud-target-resource`, but this emulator still requires it to name
the provider. The GetCallerIdentity `Arn` (an assumed-role ARN) becomes
`google.subject`; its `Account` must be the provider's account. The condition sees
`{"arn", "account", "userid"}` (a glob matches `arn`).

Principals are IAM member strings: `principal://iam.googleapis.com/<pool>/subject/<sub>`
for federated tokens, `serviceAccount:<email>` for service-account tokens. Service
account bindings list members; as a dev convenience `*`/`?` globs work in `principal://`
members, and `principalSet://iam.googleapis.com/<pool>/*` means the whole pool.
generateAccessToken/generateIdToken need the caller to be a member (workloadIdentityUser
or serviceAccountTokenCreator, which both grant getAccessToken/getOpenIdToken) on the
first delegate or the target, and each delegate to be a member on the next.

Requests are recorded (`requests`) and every issued token is remembered (`whoami`).
Tokens are opaque random strings starting `ya29.dev-`, kept in memory only, hidden
from repr and never logged. `faults` is keyed by operation: `token`,
`generateAccessToken`, `generateIdToken` (or the path of the two discovery documents).
"""

from __future__ import annotations

import http.client
import json
import logging
import re
import secrets
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from bridge.devstack._emulator import RecordingEmulator
from bridge.devstack._http import HttpRequest, HttpResponse, form_fields, http_date
from bridge.devstack.faults import HttpFailure
from bridge.devstack.globs import string_like
from bridge.devstack.jwks import (
    IssuerKeys,
    IssuerUnreachableError,
    JsonFetcher,
    fetch_json,
    signature_valid,
)

_log = logging.getLogger(__name__)

STS_TOKEN_PATH = "/v1/token"
GOOGLE_ISSUER_PATH = "/google"
GOOGLE_DISCOVERY_PATH = GOOGLE_ISSUER_PATH + "/.well-known/openid-configuration"
GOOGLE_CERTS_PATH = GOOGLE_ISSUER_PATH + "/oauth2/v3/certs"

OP_TOKEN = "token"
OP_GENERATE_ACCESS_TOKEN = "generateAccessToken"
OP_GENERATE_ID_TOKEN = "generateIdToken"

# RFC 8693 / Google type names (not secrets).
TOKEN_EXCHANGE_GRANT = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"
JWT_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:jwt"
ID_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:id_token"
AWS_TOKEN_TYPE = "urn:ietf:params:aws:token-type:aws4_request"
CLOUD_PLATFORM_SCOPE = "https://www.googleapis.com/auth/cloud-platform"
IAM_SCOPE = "https://www.googleapis.com/auth/iam"

FEDERATED_TOKEN_LIFETIME = 3600
ID_TOKEN_LIFETIME = 3600
DEFAULT_LIFETIME = 3600
EXTENDED_MAX_LIFETIME = 43200  # with constraints/iam.allowServiceAccountCredentialLifetimeExtension
MAX_SUBJECT_BYTES = 127
MAX_ASSERTION_LIFETIME = 48 * 3600
IAT_LEEWAY = 60

CONDITION_REJECTED = "The given credential is rejected by the attribute condition."
INVALID_TARGET = (
    'The target service indicated by the "audience" parameters is invalid. This might either '
    "be because the pool or provider is disabled or deleted or because it doesn't exist."
)
UNAUTHENTICATED = (
    "Request had invalid authentication credentials. Expected OAuth 2 access token, login "
    "cookie or other valid authentication credential. See "
    "https://developers.google.com/identity/sign-in/web/devconsole-project."
)
SUBJECT_TOO_LONG = (
    "The size of mapped attribute google.subject exceeds the 127 bytes limit. Either modify "
    "your attribute mapping or the incoming assertion to produce a mapped attribute that is "
    "less than 127 bytes."
)

_IAM_HOST = "iam.googleapis.com"
_PROVIDER_NAME = re.compile(
    r"//iam\.googleapis\.com/(?P<pool>projects/\d+/locations/global/workloadIdentityPools/"
    r"[a-z0-9-]{4,32})/providers/[a-z0-9-]{4,32}",
    re.ASCII,
)
_IAM_PATH = re.compile(
    r"/v1/projects/(?P<project>[^/]+)/serviceAccounts/(?P<name>[^/:]+)"
    r":(?P<method>generateAccessToken|generateIdToken)",
)
_DELEGATE = re.compile(r"projects/-/serviceAccounts/(?P<name>[^/]+)")
_LIFETIME = re.compile(r"(?P<seconds>\d+)(?:\.\d{1,9})?s", re.ASCII)
_AWS_STS_HOST = re.compile(
    r"sts(?:-fips)?(?:\.[a-z0-9-]+)?\.amazonaws\.com(?:\.cn)?|sts\.[a-z0-9-]+\.api\.aws", re.ASCII
)
_OIDC_ALGS = frozenset({"RS256", "ES256"})
_TOKEN_ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_"
_MAX_AWS_RESPONSE = 1 << 16

# Google's HTTP status per canonical error status (IAM) and per RFC 6749 code (STS).
_IAM_STATUS_CODES: Mapping[str, int] = {
    "INVALID_ARGUMENT": 400,
    "FAILED_PRECONDITION": 400,
    "UNAUTHENTICATED": 401,
    "PERMISSION_DENIED": 403,
    "NOT_FOUND": 404,
    "RESOURCE_EXHAUSTED": 429,
    "INTERNAL": 500,
    "UNAVAILABLE": 503,
    "DEADLINE_EXCEEDED": 504,
}
_STS_STATUS_CODES: Mapping[str, int] = {
    "temporarily_unavailable": 503,
    "server_error": 500,
    "rate_limit_exceeded": 429,
}

AttributeCondition = Callable[[Mapping[str, Any]], bool] | str | None
"""A provider's attribute condition: a predicate on the assertion (OIDC claims, or
`{"arn", "account", "userid"}` for AWS), a StringLike glob on `sub`/`arn`, or None."""

AwsReplay = Callable[[str, Mapping[str, str], bytes, float], tuple[int, bytes]]
"""Sends a signed GetCallerIdentity: (url, headers, body, timeout) -> (status, body).

Raises OSError when the endpoint cannot be reached."""


def replay_signed_request(
    url: str, headers: Mapping[str, str], body: bytes, timeout: float
) -> tuple[int, bytes]:
    """POST `body` to `url` with exactly `headers` (their `Host` included), no proxies.

    http.client sends a caller-given Host header instead of the connected address,
    which is what keeps a SigV4 signature made for another host valid.

    Raises:
        OSError: connection failure, timeout or an unreadable response.
    """
    split = urlsplit(url)
    connection_class = (
        http.client.HTTPSConnection if split.scheme == "https" else http.client.HTTPConnection
    )
    connection = connection_class(split.hostname or "", split.port, timeout=timeout)
    target = (split.path or "/") + (f"?{split.query}" if split.query else "")
    try:
        connection.request("POST", target, body=body, headers=dict(headers))
        response = connection.getresponse()
        return response.status, response.read(_MAX_AWS_RESPONSE)
    except http.client.HTTPException as err:
        raise OSError(f"bad response from {split.hostname}: {type(err).__name__}") from err
    finally:
        connection.close()


def _pool_of(audience: str) -> str:
    match = _PROVIDER_NAME.fullmatch(audience)
    if match is None:
        raise ValueError(f"not a workload identity provider resource name: {audience!r}")
    return match.group("pool")


def federated_principal(provider_audience: str, subject: str) -> str:
    """The IAM member of one federated identity: `principal://.../subject/<subject>`."""
    return f"principal://{_IAM_HOST}/{_pool_of(provider_audience)}/subject/{subject}"


def pool_principal_set(provider_audience: str) -> str:
    """The IAM member of every identity in the provider's pool: `principalSet://.../*`."""
    return f"principalSet://{_IAM_HOST}/{_pool_of(provider_audience)}/*"


def _member(value: str) -> str:
    if value.startswith(("principal://", "principalSet://", "serviceAccount:")):
        return value
    if "@" in value and ":" not in value:
        return f"serviceAccount:{value}"
    raise ValueError(f"not an IAM member or service account email: {value!r}")


def _member_matches(member: str, principal: str) -> bool:
    if member.startswith("principalSet://") and member.endswith("/*"):
        pool = member.removeprefix(f"principalSet://{_IAM_HOST}/")[:-2]
        return principal.startswith(f"principal://{_IAM_HOST}/{pool}/subject/")
    return string_like(member).fullmatch(principal) is not None


def _condition_holds(condition: AttributeCondition, assertion: Mapping[str, Any], key: str) -> bool:
    if condition is None:
        return True
    if isinstance(condition, str):
        return string_like(condition).fullmatch(str(assertion.get(key, ""))) is not None
    return bool(condition(assertion))


def _new_token() -> str:
    return "ya29.dev-" + "".join(secrets.choice(_TOKEN_ALPHABET) for _ in range(120))


def _new_unique_id() -> str:
    """21 digits starting with 1, like Google's service account unique IDs."""
    return "1" + str(secrets.randbelow(10**20)).zfill(20)


def _rfc3339(epoch: float) -> str:
    """`YYYY-MM-DDTHH:MM:SSZ`: google-auth parses expireTime with exactly this format."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(epoch)))


@dataclass(frozen=True, slots=True)
class OidcWorkloadProvider:
    """A workload identity pool OIDC provider, named by its full resource name."""

    audience: str
    issuer_uri: str
    allowed_audiences: tuple[str, ...]
    condition: AttributeCondition = field(compare=False)
    enabled: bool = True
    jwks: Mapping[str, Any] | None = field(default=None, compare=False, repr=False)

    def principal(self, subject: str) -> str:
        """The `principal://` member for a `google.subject` of this provider."""
        return federated_principal(self.audience, subject)

    def accepts_audience(self, aud: Iterable[str]) -> bool:
        """Google's rule: one of `allowed_audiences`, or (none set) the resource name."""
        allowed = set(self.allowed_audiences) or {self.audience, "https:" + self.audience}
        return any(a in allowed for a in aud)


@dataclass(frozen=True, slots=True)
class AwsWorkloadProvider:
    """A workload identity pool AWS provider: one account, verified through `sts_url`."""

    audience: str
    account_id: str
    sts_url: str
    condition: AttributeCondition = field(compare=False)
    enabled: bool = True

    def principal(self, subject: str) -> str:
        """The `principal://` member for a `google.subject` (an ARN) of this provider."""
        return federated_principal(self.audience, subject)


WorkloadProvider = OidcWorkloadProvider | AwsWorkloadProvider


@dataclass(frozen=True, slots=True)
class ServiceAccount:
    """A service account and the members allowed to mint its tokens."""

    email: str
    unique_id: str
    workload_identity_users: tuple[str, ...]
    token_creators: tuple[str, ...]
    max_lifetime: int

    @property
    def member(self) -> str:
        """`serviceAccount:<email>`, the principal of tokens issued for this account."""
        return f"serviceAccount:{self.email}"

    def allows(self, principal: str) -> bool:
        """Whether `principal` holds getAccessToken/getOpenIdToken on this account."""
        members = (*self.workload_identity_users, *self.token_creators)
        return any(_member_matches(member, principal) for member in members)


@dataclass(frozen=True, slots=True)
class GoogleToken:
    """An access token this emulator issued and whom it belongs to (`whoami`).

    `principal` is a `principal://` member (federated) or `serviceAccount:<email>`;
    `delegates` are the service accounts the token was obtained through.
    """

    token: str = field(repr=False)
    principal: str
    scopes: tuple[str, ...]
    expires_at: float
    provider: str | None = None
    subject: str | None = None
    service_account: str | None = None
    delegates: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class GoogleRecordedRequest:
    """One request as received; `form`, `json_body`, `headers` hold tokens: never print them.

    `operation` is `token`, `generateAccessToken`, `generateIdToken` or else the path.
    """

    operation: str
    method: str
    path: str
    form: Mapping[str, str] = field(repr=False)
    json_body: Any = field(repr=False)
    headers: Mapping[str, str] = field(repr=False)
    received_at: float


class _StsError(Exception):
    """An RFC 6749 error reply of the STS endpoint."""

    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(f"{error}: {description}")
        self.error = error
        self.description = description
        self.status = status


class _IamError(Exception):
    """A Google JSON error reply of IAM Credentials (canonical status name)."""

    def __init__(self, status: str, message: str, code: int | None = None) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message
        self.code = code or _IAM_STATUS_CODES.get(status, 400)


def _sts_failure(failure: HttpFailure) -> _StsError:
    """A fault switch as an STS error: code is the RFC 6749 `error` (503 unless known)."""
    return _StsError(
        failure.code,
        failure.message or "The service is currently unavailable.",
        failure.status or _STS_STATUS_CODES.get(failure.code, 400),
    )


def _iam_failure(failure: HttpFailure) -> _IamError:
    """A fault switch as an IAM error: code is the canonical status, e.g. UNAVAILABLE."""
    return _IamError(
        failure.code,
        failure.message or "The service is currently unavailable.",
        failure.status or _IAM_STATUS_CODES.get(failure.code, 400),
    )


def _denied(permission: str) -> _IamError:
    return _IamError(
        "PERMISSION_DENIED",
        f"Permission 'iam.serviceAccounts.{permission}' denied on resource (or it may not exist).",
    )


def _json_response(status: int, document: Mapping[str, Any], now: float) -> HttpResponse:
    return HttpResponse(
        status,
        json.dumps(document).encode(),
        {"Content-Type": "application/json; charset=UTF-8", "Date": http_date(now)},
    )


class GcpEmulator(RecordingEmulator[GoogleRecordedRequest]):
    """Google STS + IAM Credentials on `http://127.0.0.1:<port>`. Thread-safe."""

    def __init__(
        self,
        *,
        port: int = 0,
        clock: Callable[[], float] = time.time,
        fetch: JsonFetcher = fetch_json,
        replay: AwsReplay = replay_signed_request,
        idp_timeout: float = 2.0,
        jwks_cache_seconds: float = 60.0,
    ) -> None:
        """Prepare the emulator; nothing listens until `start()`.

        `clock` drives every time check and expiry; `fetch` reads issuers' discovery
        documents and JWKS; `replay` sends signed GetCallerIdentity requests to AWS.
        """
        self._clock = clock
        self._replay = replay
        self._idp_timeout = idp_timeout
        self._lock = threading.Lock()
        self._providers: dict[str, WorkloadProvider] = {}
        self._accounts: dict[str, ServiceAccount] = {}
        self._tokens: dict[str, GoogleToken] = {}
        self._keys = IssuerKeys(fetch, timeout=idp_timeout, cache_seconds=jwks_cache_seconds)
        self._signing_key: tuple[str, rsa.RSAPrivateKey] | None = None
        super().__init__(port=port, name="devstack-gcp")

    # -- lifecycle -------------------------------------------------------------------


    @property
    def sts_url(self) -> str:
        """The token exchange endpoint, google-auth's `token_url`."""
        return self.url + STS_TOKEN_PATH

    @property
    def google_issuer(self) -> str:
        """`iss` of the ID tokens from generateIdToken; serves OIDC discovery."""
        return self.url + GOOGLE_ISSUER_PATH

    def impersonation_url(self, service_account: str) -> str:
        """google-auth's `service_account_impersonation_url` for this account."""
        return f"{self.url}/v1/projects/-/serviceAccounts/{service_account}:generateAccessToken"

    # -- project configuration ----------------------------------------------------------

    def add_oidc_provider(
        self,
        audience: str,
        *,
        issuer_uri: str,
        allowed_audiences: Iterable[str] = (),
        attribute_condition: AttributeCondition = None,
        enabled: bool = True,
        jwks: Mapping[str, Any] | None = None,
    ) -> OidcWorkloadProvider:
        """Create (or replace) an OIDC provider named by its full resource name.

        `jwks` plays Google's uploaded `jwksJson`: then discovery is never fetched.

        Raises:
            ValueError: `audience` is not a provider resource name, or more than 10
                allowed audiences.
        """
        _pool_of(audience)
        audiences = tuple(allowed_audiences)
        if isinstance(allowed_audiences, str) or len(audiences) > 10:
            raise ValueError("allowed_audiences must be a list of at most 10 strings")
        provider = OidcWorkloadProvider(
            audience=audience,
            issuer_uri=issuer_uri.rstrip("/"),
            allowed_audiences=audiences,
            condition=attribute_condition,
            enabled=enabled,
            jwks=jwks,
        )
        with self._lock:
            self._providers[audience] = provider
            self._keys.forget(provider.issuer_uri)
        return provider

    def add_aws_provider(
        self,
        audience: str,
        *,
        account_id: str,
        sts_url: str,
        attribute_condition: AttributeCondition = None,
        enabled: bool = True,
    ) -> AwsWorkloadProvider:
        """Create (or replace) an AWS provider for `account_id`, verified via `sts_url`.

        Raises:
            ValueError: bad resource name, account ID not 12 digits, or `sts_url` not http(s).
        """
        _pool_of(audience)
        if re.fullmatch(r"\d{12}", account_id) is None:
            raise ValueError(f"account_id must be 12 digits: {account_id!r}")
        if not sts_url.startswith(("http://", "https://")):
            raise ValueError(f"sts_url must be an http(s) URL: {sts_url!r}")
        provider = AwsWorkloadProvider(
            audience=audience,
            account_id=account_id,
            sts_url=sts_url.rstrip("/"),
            condition=attribute_condition,
            enabled=enabled,
        )
        with self._lock:
            self._providers[audience] = provider
        return provider

    def set_provider_enabled(self, audience: str, enabled: bool) -> None:
        """Enable or disable a provider (a disabled one is `invalid_target`).

        Raises:
            KeyError: no such provider.
        """
        with self._lock:
            provider = self._providers[audience]
            if isinstance(provider, OidcWorkloadProvider):
                self._providers[audience] = OidcWorkloadProvider(
                    provider.audience,
                    provider.issuer_uri,
                    provider.allowed_audiences,
                    provider.condition,
                    enabled,
                    provider.jwks,
                )
            else:
                self._providers[audience] = AwsWorkloadProvider(
                    provider.audience,
                    provider.account_id,
                    provider.sts_url,
                    provider.condition,
                    enabled,
                )

    def add_service_account(
        self,
        email: str,
        *,
        workload_identity_users: Iterable[str] = (),
        token_creators: Iterable[str] = (),
        max_lifetime: int = DEFAULT_LIFETIME,
        unique_id: str | None = None,
    ) -> ServiceAccount:
        """Create (or replace, keeping its unique ID) a service account and its bindings.

        Members are IAM member strings (`principal://`, `principalSet://`,
        `serviceAccount:`); a bare email means `serviceAccount:<email>`.
        `max_lifetime` above 3600 plays the org policy that allows up to 43200 s.

        Raises:
            ValueError: malformed email, member or unique ID; max_lifetime outside
                3600..43200.
        """
        if re.fullmatch(r"[^@\s/:]+@[^@\s/:]+", email) is None:
            raise ValueError(f"not a service account email: {email!r}")
        if not DEFAULT_LIFETIME <= max_lifetime <= EXTENDED_MAX_LIFETIME:
            raise ValueError(f"max_lifetime must be within 3600..43200, got {max_lifetime}")
        if unique_id is not None and re.fullmatch(r"\d{21}", unique_id) is None:
            raise ValueError(f"unique_id must be 21 digits: {unique_id!r}")
        users = tuple(_member(m) for m in workload_identity_users)
        creators = tuple(_member(m) for m in token_creators)
        with self._lock:
            previous = self._accounts.get(email)
            if unique_id is None:
                unique_id = previous.unique_id if previous else _new_unique_id()
            account = ServiceAccount(
                email=email,
                unique_id=unique_id,
                workload_identity_users=users,
                token_creators=creators,
                max_lifetime=max_lifetime,
            )
            self._accounts[email] = account
        return account

    @property
    def providers(self) -> Mapping[str, WorkloadProvider]:
        """Providers by resource name (a snapshot)."""
        with self._lock:
            return dict(self._providers)

    @property
    def service_accounts(self) -> Mapping[str, ServiceAccount]:
        """Service accounts by email (a snapshot)."""
        with self._lock:
            return dict(self._accounts)

    # -- observations --------------------------------------------------------------------

    @property
    def issued(self) -> tuple[GoogleToken, ...]:
        """Every access token handed out, oldest first."""
        with self._lock:
            return tuple(self._tokens.values())

    def whoami(self, token: str) -> GoogleToken | None:
        """Which principal an access token issued here belongs to (expired ones too)."""
        with self._lock:
            return self._tokens.get(token)

    def google_jwks(self) -> dict[str, Any]:
        """The JWKS of the ID-token signing key (RSA, generated on first use)."""
        kid, key = self._google_key()
        jwk = RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
        return {"keys": [{**jwk, "kid": kid, "alg": "RS256", "use": "sig"}]}

    # -- the wire --------------------------------------------------------------------------

    def handle(self, request: HttpRequest) -> HttpResponse:
        """Answer one HTTP request (public so tests can call it without a socket)."""
        iam_match = _IAM_PATH.fullmatch(request.path)
        operation = request.path
        if request.path == STS_TOKEN_PATH:
            operation = OP_TOKEN
        elif iam_match is not None:
            operation = iam_match.group("method")
        form, document = _parse_body(request)
        self._record(
            GoogleRecordedRequest(
                operation=operation,
                method=request.method,
                path=request.path,
                form=form,
                json_body=document,
                headers=dict(request.headers),
                received_at=self._clock(),
            )
        )
        failure = self.faults.before(operation)
        if operation == OP_TOKEN:
            return self._sts_reply(lambda: self._token_exchange(request, form), failure)
        if iam_match is not None:
            return self._iam_reply(lambda: self._iam(request, iam_match, document), failure)
        if failure is not None:
            return _json_response(failure.status or 503, {"error": failure.code}, self._clock())
        if request.path in (GOOGLE_DISCOVERY_PATH, GOOGLE_CERTS_PATH) and request.method == "GET":
            if request.path == GOOGLE_DISCOVERY_PATH:
                return _json_response(200, self.discovery_document(), self._clock())
            return _json_response(200, self.google_jwks(), self._clock())
        return _json_response(
            404,
            {"error": {"code": 404, "message": "Not Found", "status": "NOT_FOUND"}},
            self._clock(),
        )

    def discovery_document(self) -> dict[str, Any]:
        """The ID-token issuer's `/.well-known/openid-configuration`."""
        return {
            "issuer": self.google_issuer,
            "jwks_uri": self.url + GOOGLE_CERTS_PATH,
            "response_types_supported": ["id_token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "claims_supported": ["aud", "azp", "email", "email_verified", "exp", "iat", "iss"],
        }

    def _sts_reply(
        self, call: Callable[[], Mapping[str, Any]], failure: HttpFailure | None
    ) -> HttpResponse:
        now = self._clock()
        try:
            if failure is not None:
                raise _sts_failure(failure)
            document = call()
        except _StsError as err:
            _log.debug("gcp sts -> %s", err.error)
            return _json_response(
                err.status, {"error": err.error, "error_description": err.description}, now
            )
        _log.debug("gcp sts -> ok")
        return _json_response(200, document, now)

    def _iam_reply(
        self, call: Callable[[], Mapping[str, Any]], failure: HttpFailure | None
    ) -> HttpResponse:
        now = self._clock()
        try:
            if failure is not None:
                raise _iam_failure(failure)
            document = call()
        except _IamError as err:
            _log.debug("gcp iam -> %s", err.status)
            error = {"code": err.code, "message": err.message, "status": err.status}
            return _json_response(err.code, {"error": error}, now)
        _log.debug("gcp iam -> ok")
        return _json_response(200, document, now)

    # -- STS token exchange --------------------------------------------------------------

    def _token_exchange(self, request: HttpRequest, form: Mapping[str, str]) -> Mapping[str, Any]:
        if request.method != "POST":
            raise _StsError("invalid_request", "The token endpoint only accepts POST.")
        audience, token_type, subject_token = _check_exchange_form(form)
        with self._lock:
            provider = self._providers.get(audience)
        if provider is None or not provider.enabled:
            raise _StsError("invalid_target", INVALID_TARGET)
        assertion: Mapping[str, Any]
        if isinstance(provider, OidcWorkloadProvider):
            if token_type == AWS_TOKEN_TYPE:
                raise _StsError("invalid_request", "The provider does not accept AWS tokens.")
            assertion, key = self._verify_oidc(provider, subject_token), "sub"
            subject = str(assertion["sub"])
        else:
            if token_type != AWS_TOKEN_TYPE:
                raise _StsError("invalid_request", "The provider only accepts AWS tokens.")
            assertion, key = self._verify_aws(provider, subject_token), "arn"
            subject = str(assertion["arn"])
        if len(subject.encode()) > MAX_SUBJECT_BYTES:
            raise _StsError("invalid_grant", SUBJECT_TOO_LONG)
        if not _condition_holds(provider.condition, assertion, key):
            raise _StsError("unauthorized_client", CONDITION_REJECTED)
        scopes = tuple(form.get("scope", "").split())
        token = self._remember(
            GoogleToken(
                token=_new_token(),
                principal=provider.principal(subject),
                scopes=scopes,
                expires_at=self._clock() + FEDERATED_TOKEN_LIFETIME,
                provider=provider.audience,
                subject=subject,
            )
        )
        return {
            "access_token": token.token,
            "issued_token_type": ACCESS_TOKEN_TYPE,
            "token_type": "Bearer",
            "expires_in": FEDERATED_TOKEN_LIFETIME,
        }

    def _verify_oidc(self, provider: OidcWorkloadProvider, token: str) -> Mapping[str, Any]:
        """The verified claims of an OIDC subject token (see the module docstring)."""
        try:
            header = jwt.get_unverified_header(token)
            claims = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError as err:
            raise _StsError("invalid_grant", "Unable to parse the ID Token.") from err
        alg = header.get("alg")
        if alg not in _OIDC_ALGS:
            raise _StsError(
                "invalid_grant",
                f"Invalid ID Token: the signing algorithm {str(alg)[:16]} is not supported; "
                "use RS256 or ES256.",
            )
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise _StsError("invalid_grant", "Invalid ID Token: the kid header is missing.")
        issuer = claims.get("iss")
        if issuer != provider.issuer_uri:
            raise _StsError(
                "invalid_grant",
                f"The issuer in ID Token {str(issuer)[:256]} does not match the expected "
                f"ISSUER {provider.issuer_uri}.",
            )
        self._check_oidc_signature(provider, token, str(alg), kid)
        aud = claims.get("aud")
        audiences = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
        if not provider.accepts_audience(a for a in audiences if isinstance(a, str)):
            expected = provider.allowed_audiences or (provider.audience,)
            raise _StsError(
                "invalid_grant",
                f"The audience in ID Token {audiences!r} does not match the expected audience "
                f"{', '.join(expected)}.",
            )
        _check_oidc_times(claims, self._clock())
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub:
            raise _StsError("invalid_grant", "Invalid ID Token: the sub claim is missing.")
        return claims

    def _check_oidc_signature(
        self, provider: OidcWorkloadProvider, token: str, alg: str, kid: str
    ) -> None:
        if provider.jwks is not None:  # keys uploaded to the provider: no discovery
            candidates: tuple[Mapping[str, Any], ...] = tuple(
                k for k in provider.jwks.get("keys", ())
                if isinstance(k, Mapping) and k.get("kid") == kid)
        else:
            try:
                candidates = self._keys.candidates(provider.issuer_uri, kid)
            except IssuerUnreachableError as err:
                _log.debug("gcp sts: cannot read keys of %s: %s", provider.issuer_uri, err)
                raise _StsError("invalid_grant", "Unable to fetch the JWKS of the issuer "
                                f"{provider.issuer_uri[:256]}.") from err
        if not candidates:
            raise _StsError(
                "invalid_grant", f"Invalid ID Token: no key with kid {kid[:64]} in the JWKS."
            )
        if not signature_valid(token, alg, candidates):
            raise _StsError("invalid_grant", "Invalid ID Token: the signature is invalid.")

    def _verify_aws(self, provider: AwsWorkloadProvider, token: str) -> Mapping[str, str]:
        """Replay the signed GetCallerIdentity to `provider.sts_url`; returns arn/account/userid."""
        signed = _parse_aws_token(token)
        url = urlsplit(signed.url)
        query = dict(parse_qsl(url.query))
        if (
            signed.method != "POST"
            or url.scheme != "https"
            or _AWS_STS_HOST.fullmatch(url.hostname or "") is None
            or query.get("Action") != "GetCallerIdentity"
            or query.get("Version") != "2011-06-15"
        ):
            raise _StsError(
                "invalid_grant",
                "The subject token must be a signed POST to an AWS STS GetCallerIdentity URL.",
            )
        headers = {k.lower(): v for k, v in signed.headers.items()}
        if headers.get("host") != url.hostname or "authorization" not in headers:
            raise _StsError("invalid_grant", "The AWS signed request lacks Host or Authorization.")
        if headers.get("x-goog-cloud-target-resource") not in (
            provider.audience,
            "https:" + provider.audience,
        ):
            raise _StsError(
                "invalid_grant",
                "The x-goog-cloud-target-resource header does not match the audience.",
            )
        target = f"{provider.sts_url}{url.path or '/'}?{url.query}"
        try:
            status, body = self._replay(target, signed.headers, signed.body, self._idp_timeout)
        except OSError as err:
            _log.debug("gcp sts: cannot reach AWS STS: %s", type(err).__name__)
            raise _StsError(
                "temporarily_unavailable", "Unable to reach AWS STS to verify the token.", 503
            ) from err
        fields = _xml_fields(body, ("Arn", "Account", "UserId", "Code", "Message"))
        if status != 200:
            raise _StsError(
                "invalid_grant",
                f"Received invalid AWS response of type {fields.get('Code', status)} with "
                f"error message: {fields.get('Message', '')}",
            )
        if not fields.get("Arn") or not fields.get("Account"):
            raise _StsError("invalid_grant", "Received an invalid AWS GetCallerIdentity response.")
        if fields["Account"] != provider.account_id:
            raise _StsError(
                "invalid_grant",
                f"The AWS account {fields['Account']} does not match the provider's account.",
            )
        return {
            "arn": fields["Arn"],
            "account": fields["Account"],
            "userid": fields.get("UserId", ""),
        }

    # -- IAM Credentials -------------------------------------------------------------------

    def _iam(self, request: HttpRequest, match: re.Match[str], body: Any) -> Mapping[str, Any]:
        if request.method != "POST":
            raise _IamError("NOT_FOUND", "Method not found.", 404)
        if match.group("project") != "-":
            raise _IamError(
                "INVALID_ARGUMENT",
                "The project must be the wildcard '-': projects/-/serviceAccounts/{ACCOUNT}.",
            )
        caller = self._bearer(request)
        if not {CLOUD_PLATFORM_SCOPE, IAM_SCOPE} & set(caller.scopes):
            raise _IamError("PERMISSION_DENIED", "Request had insufficient authentication scopes.")
        if not isinstance(body, dict):
            raise _IamError("INVALID_ARGUMENT", "Invalid JSON payload received.")
        target = self._account(unquote(match.group("name")))
        raw_delegates = body.get("delegates") or []
        if not isinstance(raw_delegates, list):
            raise _IamError("INVALID_ARGUMENT", "Invalid value at 'delegates'.")
        delegates: list[ServiceAccount] = []
        for raw in raw_delegates:
            found = _DELEGATE.fullmatch(raw) if isinstance(raw, str) else None
            if found is None:
                raise _IamError(
                    "INVALID_ARGUMENT",
                    f"Invalid form of delegate {str(raw)[:128]!r}: "
                    "expected projects/-/serviceAccounts/{ACCOUNT_EMAIL_OR_UNIQUEID}.",
                )
            delegates.append(self._account(found.group("name")))
        access = match.group("method") == OP_GENERATE_ACCESS_TOKEN
        if access:
            scopes, lifetime = _access_token_request(body, target)
        elif not isinstance(body.get("audience"), str) or not body["audience"]:
            raise _IamError("INVALID_ARGUMENT", "Audience is required.")
        holder = caller.principal
        for account in (*delegates, target):
            if not account.allows(holder):
                raise _denied("getAccessToken" if access else "getOpenIdToken")
            holder = account.member
        chain = tuple(d.email for d in delegates)
        now = self._clock()
        if access:
            token = self._remember(
                GoogleToken(
                    token=_new_token(),
                    principal=target.member,
                    scopes=scopes,
                    expires_at=now + lifetime,
                    service_account=target.email,
                    delegates=chain,
                )
            )
            return {"accessToken": token.token, "expireTime": _rfc3339(token.expires_at)}
        return {"token": self._id_token(target, str(body["audience"]), body, now)}

    def _bearer(self, request: HttpRequest) -> GoogleToken:
        scheme, _, token = request.header("Authorization").partition(" ")
        with self._lock:
            grant = self._tokens.get(token.strip()) if scheme.lower() == "bearer" else None
        if grant is None or grant.expires_at <= self._clock():
            raise _IamError("UNAUTHENTICATED", UNAUTHENTICATED)
        return grant

    def _account(self, name: str) -> ServiceAccount:
        with self._lock:
            account = self._accounts.get(name) or next(
                (a for a in self._accounts.values() if a.unique_id == name), None
            )
        if account is None:
            raise _IamError("NOT_FOUND", f"Not found; Gaia id not found for email {name[:256]}")
        return account

    def _id_token(
        self, account: ServiceAccount, audience: str, body: Mapping[str, Any], now: float
    ) -> str:
        kid, key = self._google_key()
        issued = int(now)
        claims: dict[str, Any] = {
            "iss": self.google_issuer,
            "aud": audience,
            "azp": account.unique_id,
            "sub": account.unique_id,
            "iat": issued,
            "exp": issued + ID_TOKEN_LIFETIME,
        }
        if body.get("includeEmail") is True:
            claims.update(email=account.email, email_verified=True)
        return jwt.encode(claims, key, algorithm="RS256", headers={"kid": kid, "typ": "JWT"})

    def _google_key(self) -> tuple[str, rsa.RSAPrivateKey]:
        """Generated lazily: RSA key generation costs tens of ms per stack otherwise."""
        with self._lock:
            if self._signing_key is None:
                key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
                self._signing_key = (secrets.token_hex(20), key)
            return self._signing_key

    def _remember(self, token: GoogleToken) -> GoogleToken:
        with self._lock:
            self._tokens[token.token] = token
        return token


# -- request parsing helpers -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _SignedAwsRequest:
    url: str
    method: str
    headers: Mapping[str, str]
    body: bytes = field(repr=False)


def _parse_body(request: HttpRequest) -> tuple[dict[str, str], Any]:
    """(form fields, None) for form bodies; ({}, parsed JSON or None) for JSON bodies."""
    text = request.body.decode("utf-8", "replace")
    if "json" in request.header("Content-Type"):
        try:
            return {}, json.loads(text) if text else None
        except ValueError:
            return {}, None
    return form_fields(text), None


def _parse_aws_token(token: str) -> _SignedAwsRequest:
    """google-auth's `quote(json.dumps({url, method, headers: [{key, value}], body?}))`."""
    try:
        document = json.loads(unquote(token))
        headers = {str(h["key"]): str(h["value"]) for h in document["headers"]}
        url, method = document["url"], document["method"]
        body = document.get("body") or document.get("data") or ""
    except (ValueError, KeyError, TypeError) as err:
        raise _StsError("invalid_request", "Unable to parse the AWS signed request.") from err
    if not isinstance(url, str) or not isinstance(method, str) or not isinstance(body, str):
        raise _StsError("invalid_request", "Unable to parse the AWS signed request.")
    return _SignedAwsRequest(url=url, method=method.upper(), headers=headers, body=body.encode())


def _xml_fields(body: bytes, names: Iterable[str]) -> dict[str, str]:
    """First text of each named element, namespace-agnostic; {} for unparseable XML."""
    wanted = set(names)
    found: dict[str, str] = {}
    try:
        root = ET.fromstring(body)
    except ET.ParseError:
        return found
    for element in root.iter():
        local = element.tag.rsplit("}", 1)[-1]
        if local in wanted and local not in found and element.text:
            found[local] = element.text.strip()
    return found


def _check_exchange_form(form: Mapping[str, str]) -> tuple[str, str, str]:
    """The request-level checks; returns audience, subject_token_type and subject_token."""
    if form.get("grant_type") != TOKEN_EXCHANGE_GRANT:
        raise _StsError("unsupported_grant_type", 'Invalid value for "grant_type".')
    if form.get("requested_token_type") != ACCESS_TOKEN_TYPE:
        raise _StsError("invalid_request", 'Invalid value for "requested_token_type".')
    token_type = form.get("subject_token_type", "")
    if token_type not in (JWT_TOKEN_TYPE, ID_TOKEN_TYPE, AWS_TOKEN_TYPE):
        raise _StsError("invalid_request", 'Invalid value for "subject_token_type".')
    subject_token = form.get("subject_token", "")
    if not subject_token:
        raise _StsError("invalid_request", 'Missing required field "subject_token".')
    audience = form.get("audience", "")
    if _PROVIDER_NAME.fullmatch(audience) is None:
        raise _StsError(
            "invalid_request",
            'Invalid value for "audience". This value should be the full resource name of '
            "the Identity Provider. See https://cloud.google.com/iam/docs/reference/sts/"
            "rest/v1/TopLevel/token for the list of possible formats.",
        )
    _check_options(form.get("options"))
    return audience, token_type, subject_token


def _check_options(raw: str | None) -> None:
    if raw is None:
        return
    try:
        options = json.loads(raw)
    except ValueError:
        options = None
    if not isinstance(options, dict):
        raise _StsError("invalid_request", 'Invalid value for "options": not a JSON object.')
    user_project = options.get("userProject")
    if user_project is not None and (not isinstance(user_project, str) or len(user_project) > 32):
        raise _StsError("invalid_request", 'Invalid value for "options.userProject".')
    audiences = options.get("audiences")
    if audiences is not None and (not isinstance(audiences, list) or len(audiences) > 5):
        raise _StsError("invalid_request", 'Invalid value for "options.audiences".')


def _numeric_claim(claims: Mapping[str, Any], name: str) -> float:
    value = claims.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _StsError("invalid_grant", f"Invalid ID Token: the {name} claim is missing.")
    return float(value)


def _check_oidc_times(claims: Mapping[str, Any], now: float) -> None:
    exp, iat = _numeric_claim(claims, "exp"), _numeric_claim(claims, "iat")
    if exp <= now:
        raise _StsError("invalid_grant", f"The ID Token has expired (exp {int(exp)}).")
    if iat > now + IAT_LEEWAY:
        raise _StsError("invalid_grant", "Invalid ID Token: iat is in the future.")
    if exp - iat >= MAX_ASSERTION_LIFETIME:
        raise _StsError(
            "invalid_grant", "Invalid ID Token: the lifetime (exp - iat) must be under 48 hours."
        )


def _access_token_request(
    body: Mapping[str, Any], target: ServiceAccount
) -> tuple[tuple[str, ...], int]:
    """generateAccessToken's body rules; returns the scopes and the lifetime in seconds."""
    scopes = body.get("scope")
    if (
        not isinstance(scopes, list)
        or not scopes
        or not all(isinstance(s, str) and s for s in scopes)
    ):
        raise _IamError("INVALID_ARGUMENT", "At least one scope is required.")
    raw = body.get("lifetime")
    lifetime = DEFAULT_LIFETIME
    if raw is not None:
        match = _LIFETIME.fullmatch(raw) if isinstance(raw, str) else None
        if match is None:
            raise _IamError(
                "INVALID_ARGUMENT",
                f"Invalid value at 'lifetime' (type.googleapis.com/google.protobuf.Duration), "
                f"{str(raw)[:32]!r}",
            )
        lifetime = int(match.group("seconds"))
    if lifetime < 1:
        raise _IamError("INVALID_ARGUMENT", "The lifetime must be at least 1s.")
    if lifetime > target.max_lifetime:
        raise _IamError(
            "INVALID_ARGUMENT",
            f"The requested lifetime {lifetime}s exceeds the maximum lifetime "
            f"{target.max_lifetime}s for {target.email}; up to {EXTENDED_MAX_LIFETIME}s needs "
            "constraints/iam.allowServiceAccountCredentialLifetimeExtension.",
        )
    return tuple(scopes), lifetime
