"""GCP hops on google-auth: workload identity federation, impersonation, ID tokens.

- `GcpFederationHop`: STS token exchange of a JWT-SVID (`identity_pool` with a
  programmatic supplier) or of AWS credentials (`aws` with a programmatic supplier:
  an `aws4_request`-signed GetCallerIdentity is the subject token). Then, when a
  service account is configured, `generateAccessToken` through `delegates`
  (`impersonated_credentials`, which takes an endpoint override and delegates).
- `GcpIdTokenHop`: `generateIdToken` for the service account, for GCP->AWS chains.
  google-auth's ID-token class has no endpoint override and needs `requests`, so this
  one IAM call is made directly over urllib3 (the transport google-auth uses here).

google-auth makes one attempt and never retries; retries are the scheduler's. Errors are
classified here from Google's error codes (RFC 6749 `error` for STS, `status` for IAM).
"""

from __future__ import annotations

import json
import re
import time
from datetime import UTC, datetime
from typing import Any

import urllib3
from google.auth import aws, exceptions, identity_pool, impersonated_credentials
from google.auth.transport.urllib3 import Request

from bridge.config import GcpTarget
from bridge.errors import ExchangeError
from bridge.exchangers import wrong_input
from bridge.model import AwsCredentials, GcpToken, GoogleIdToken, JwtSvid, Material
from bridge.skew import ClockSkew

# RFC 8693 token type names, not secrets.
JWT_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:jwt"  # noqa: S105
AWS_TOKEN_TYPE = "urn:ietf:params:aws:token-type:aws4_request"  # noqa: S105
IAM_SCOPE = "https://www.googleapis.com/auth/iam"

# RFC 6749 codes from Google STS -> (retryable, reason, fetch a fresh SVID first)
_STS_CODES: dict[str, tuple[bool, str, bool]] = {
    "invalid_request": (False, "invalid_request", False),
    "invalid_target": (False, "invalid_target", False),
    "unauthorized_client": (False, "condition_rejected", False),
    "invalid_client": (False, "invalid_request", False),
    "invalid_scope": (False, "invalid_request", False),
    "temporarily_unavailable": (True, "unavailable", False),
    "server_error": (True, "unavailable", False),
}
# IAM Credentials `status` -> (retryable, reason)
_IAM_STATUS: dict[str, tuple[bool, str]] = {
    "INVALID_ARGUMENT": (False, "invalid_request"),
    "FAILED_PRECONDITION": (False, "invalid_request"),
    "PERMISSION_DENIED": (False, "access_denied"),
    "UNAUTHENTICATED": (True, "invalid_token"),
    "NOT_FOUND": (False, "not_found"),
    "RESOURCE_EXHAUSTED": (True, "throttled"),
    "UNAVAILABLE": (True, "unavailable"),
    "INTERNAL": (True, "unavailable"),
    "DEADLINE_EXCEEDED": (True, "timeout"),
}


class _Token(identity_pool.SubjectTokenSupplier):
    def __init__(self, token: str) -> None:
        self._token = token

    def get_subject_token(self, context: Any, request: Any) -> str:
        return self._token


class _AwsSession(aws.AwsSecurityCredentialsSupplier):
    def __init__(self, creds: AwsCredentials, region: str) -> None:
        self._creds = creds
        self._region = region

    def get_aws_security_credentials(self, context: Any, request: Any) -> Any:
        c = self._creds
        return aws.AwsSecurityCredentials(c.access_key_id, c.secret_access_key,
                                          c.session_token)

    def get_aws_region(self, context: Any, request: Any) -> str:
        return self._region


class _SkewObservingPool(urllib3.PoolManager):
    """Every response's Date header feeds the skew estimate (google-auth's calls too)."""

    def __init__(self, skew: ClockSkew, **kw: Any) -> None:
        super().__init__(**kw)
        self._skew = skew

    def urlopen(  # type: ignore[override] # PoolManager.urlopen itself narrows it
            self, method: str, url: str, redirect: bool = True, **kw: Any,
    ) -> urllib3.BaseHTTPResponse:
        sent = time.time()
        response = super().urlopen(method, url, redirect=redirect, **kw)
        self._skew.observe("gcp", response.headers.get("Date"), sent, time.time())
        return response


def _pool(timeout: float, skew: ClockSkew | None) -> urllib3.PoolManager:
    kw: dict[str, Any] = {"timeout": urllib3.Timeout(total=timeout), "retries": False}
    return _SkewObservingPool(skew, **kw) if skew else urllib3.PoolManager(**kw)


class GcpFederationHop:
    """JWT-SVID or AWS session -> federated token -> (optionally) a service account token."""

    name = "gcp_federation"

    def __init__(self, target: GcpTarget, *, timeout: float,
                 aws_region: str = "us-east-1", skew: ClockSkew | None = None) -> None:
        self._target = target
        # The aws4_request subject token is a GetCallerIdentity request signed for the
        # regional AWS STS (google-auth insists on https://sts.<region>.amazonaws.com);
        # Google replays it there to learn the caller's ARN.
        self._aws_region = aws_region
        self._http = _pool(timeout, skew)

    def exchange(self, material: Material) -> GcpToken:
        t = self._target
        request = Request(self._http)
        if not t.service_account:
            federated = self._federated_credentials(material, list(t.scopes))
            try:
                federated.refresh(request)
            except exceptions.GoogleAuthError as exc:
                raise _classify_sts(exc) from None
            return GcpToken(access_token=str(federated.token),
                            expires_at=_epoch(federated.expiry),
                            principal=t.workload_identity_provider)
        sa = t.service_account
        # impersonated_credentials re-scopes (copies) its source to the IAM scope and
        # refreshes that copy itself: let it, so each refresh is one STS exchange.
        impersonated = impersonated_credentials.Credentials(
            source_credentials=self._federated_credentials(material, [IAM_SCOPE]),
            target_principal=sa, target_scopes=list(t.scopes),
            delegates=[f"projects/-/serviceAccounts/{d}" for d in t.delegates],
            lifetime=int(t.lifetime),
            iam_endpoint_override=(f"{t.iam_credentials_endpoint}/v1/projects/-/"
                                   f"serviceAccounts/{sa}:generateAccessToken"))
        try:
            impersonated.refresh(request)
        except exceptions.GoogleAuthError as exc:
            raise _classify_iam_refresh(exc, hop="gcp_iam") from None
        # The federated token (kept for a following generateIdToken) is the refreshed copy's.
        federated_token = getattr(impersonated, "_source_credentials", None)
        return GcpToken(access_token=str(impersonated.token),
                        expires_at=_epoch(impersonated.expiry), principal=sa,
                        federated_token=str(federated_token.token) if federated_token else None)

    def _federated_credentials(self, material: Material, scopes: list[str]) -> Any:
        t = self._target
        if isinstance(material, JwtSvid):
            return identity_pool.Credentials(
                audience=t.workload_identity_provider, subject_token_type=JWT_TOKEN_TYPE,
                token_url=t.sts_endpoint, subject_token_supplier=_Token(material.token),
                scopes=scopes)
        if isinstance(material, AwsCredentials):
            return aws.Credentials(
                audience=t.workload_identity_provider, subject_token_type=AWS_TOKEN_TYPE,
                token_url=t.sts_endpoint,
                aws_security_credentials_supplier=_AwsSession(material, self._aws_region),
                scopes=scopes)
        raise wrong_input(self.name, material)


class GcpIdTokenHop:
    """Service account token (with its federated token) -> Google ID token for AWS."""

    name = "gcp_id_token"

    def __init__(self, target: GcpTarget, *, audience: str, timeout: float,
                 skew: ClockSkew | None = None) -> None:
        self._target = target
        self._audience = audience
        self._http = _pool(timeout, skew)

    def exchange(self, material: Material) -> GoogleIdToken:
        if not isinstance(material, GcpToken) or not self._target.service_account:
            raise wrong_input(self.name, material)
        sa = self._target.service_account
        url = (f"{self._target.iam_credentials_endpoint}/v1/projects/-/serviceAccounts/"
               f"{sa}:generateIdToken")
        body = {"audience": self._audience, "includeEmail": True,
                "delegates": [f"projects/-/serviceAccounts/{d}"
                              for d in self._target.delegates]}
        bearer = material.federated_token or material.access_token
        try:
            response = self._http.request(
                "POST", url, body=json.dumps(body).encode(),
                headers={"Content-Type": "application/json",
                         "Authorization": f"Bearer {bearer}"})
        except urllib3.exceptions.HTTPError as exc:
            raise ExchangeError(f"cannot reach IAM Credentials: {type(exc).__name__}",
                                hop=self.name, code="ConnectionError", retryable=True,
                                reason="unreachable") from None
        if response.status != 200:
            raise _classify_iam(response.status, response.data, hop=self.name)
        try:
            token = str(json.loads(response.data)["token"])
        except (KeyError, ValueError, TypeError):
            raise ExchangeError("no token in the generateIdToken response", hop=self.name,
                                code="BadResponse", retryable=True,
                                reason="unavailable") from None
        return GoogleIdToken(token=token, subject=sa, expires_at=_jwt_exp(token))


def _epoch(expiry: datetime | None) -> float:
    """google-auth expiries are naive UTC datetimes."""
    if expiry is None:
        return 0.0
    return expiry.replace(tzinfo=UTC).timestamp()


def _jwt_exp(token: str) -> float:
    import jwt  # already a dependency (via py-spiffe); only the claims are read here

    try:
        exp = jwt.decode(token, options={"verify_signature": False}).get("exp")
    except jwt.PyJWTError:
        return 0.0
    return float(exp) if isinstance(exp, int | float) else 0.0


def _classify_sts(exc: Exception) -> ExchangeError:
    if isinstance(exc, exceptions.TransportError):
        return ExchangeError(f"cannot reach GCP STS: {_short(exc)}", hop="gcp_sts",
                             code="ConnectionError", retryable=True, reason="unreachable")
    body = _body(exc)
    code = str(body.get("error", "")) if isinstance(body, dict) else ""
    text = str(body.get("error_description", "")) if isinstance(body, dict) else _short(exc)
    if not code:
        m = re.search(r"Error code (\w+)", str(exc))
        code = m.group(1) if m else type(exc).__name__
        if not m:
            text = _short(exc)
    if code == "invalid_grant":
        lowered = text.lower()
        if "audience" in lowered:
            return ExchangeError(text, hop="gcp_sts", code=code, retryable=False,
                                 reason="audience_mismatch")
        expired = "expir" in lowered
        return ExchangeError(text, hop="gcp_sts", code=code, retryable=True,
                             reason="token_expired" if expired else "invalid_token",
                             fresh_svid=True)
    retryable, reason, fresh = _STS_CODES.get(code, (True, "unavailable", False))
    return ExchangeError(text or code, hop="gcp_sts", code=code, retryable=retryable,
                         reason=reason, fresh_svid=fresh)


def _classify_iam_refresh(exc: Exception, *, hop: str) -> ExchangeError:
    if isinstance(exc, exceptions.TransportError):
        return ExchangeError(f"cannot reach IAM Credentials: {_short(exc)}", hop=hop,
                             code="ConnectionError", retryable=True, reason="unreachable")
    if isinstance(exc, exceptions.OAuthError):  # the federated refresh inside impersonation
        return _classify_sts(exc)
    raw = exc.args[1] if len(exc.args) > 1 else ""
    return _classify_iam(0, raw, hop=hop)


def _classify_iam(status: int, raw: object, *, hop: str) -> ExchangeError:
    try:
        error = json.loads(raw if isinstance(raw, str | bytes) else "{}").get("error", {})
    except (ValueError, AttributeError):
        error = {}
    if not isinstance(error, dict):
        error = {}
    state = str(error.get("status", "")) or {400: "INVALID_ARGUMENT", 403: "PERMISSION_DENIED",
                                              404: "NOT_FOUND", 429: "RESOURCE_EXHAUSTED"
                                              }.get(status, "UNAVAILABLE")
    retryable, reason = _IAM_STATUS.get(state, (True, "unavailable"))
    message = " ".join(str(error.get("message", f"HTTP {status}")).split())[:300]
    return ExchangeError(message, hop=hop, code=state, retryable=retryable, reason=reason)


def _body(exc: Exception) -> object:
    raw = exc.args[1] if len(exc.args) > 1 else None
    try:
        return json.loads(raw) if isinstance(raw, str | bytes) else {}
    except ValueError:
        return {}


def _short(exc: Exception) -> str:
    text = " ".join(str(exc.args[0] if exc.args else exc).split())
    return text[:200]
