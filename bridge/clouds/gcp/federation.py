"""GCP workload identity federation on google-auth: STS token exchange, impersonation.

`GcpFederationHop` exchanges a JWT-SVID (or an ID token) through `identity_pool` with a
programmatic supplier, or an AWS session through `aws` with a programmatic
AWS-credentials supplier (an `aws4_request`-signed GetCallerIdentity is the subject
token). When a service account is configured it then calls `generateAccessToken`
through `delegates` (`impersonated_credentials`, which takes an endpoint override).

google-auth makes one attempt and never retries; retries are the scheduler's.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import urllib3
from google.auth import aws, exceptions, identity_pool, impersonated_credentials
from google.auth.transport.urllib3 import Request

from bridge.clouds.aws.material import AwsCredentials
from bridge.clouds.base import wrong_input
from bridge.clouds.gcp.classify import classify_iam_refresh, classify_sts
from bridge.clouds.gcp.config import JWT_TOKEN_TYPE, MTLS_TOKEN_TYPE, GcpHopConfig
from bridge.clouds.gcp.material import GcpToken
from bridge.clouds.gcp.quota import sts_quota
from bridge.model import IdToken, JwtSvid, Material
from bridge.skew import ClockSkew, lifetime
from bridge.x509_svid import X509Svid

SKEW_SERVICE = "gcp"  # the clock_skew_seconds{service} of Google's answers
AWS_TOKEN_TYPE = "urn:ietf:params:aws:token-type:aws4_request"  # noqa: S105 - RFC 8693 name
IAM_SCOPE = "https://www.googleapis.com/auth/iam"


class _Token(identity_pool.SubjectTokenSupplier):
    def __init__(self, token: str) -> None:
        self._token = token

    def get_subject_token(self, context: Any, request: Any) -> str:
        return self._token


class _CertificateChain(identity_pool.SubjectTokenSupplier):
    """X.509 federation's subject token: the JSON list of base64 DER certificates, leaf
    first, then its intermediates (what google-auth's own `_X509Supplier` sends); the
    proof of possession is the mTLS handshake with the same certificate."""

    def __init__(self, svid: X509Svid) -> None:
        self._token = json.dumps([base64.b64encode(d).decode() for d in svid.chain])

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


class DatedPool(urllib3.PoolManager):
    """The urllib3 pool google-auth (and the ID-token call) run on: our deadline, no
    retries (the scheduler's). Every answer's `Date` feeds the skew estimate, and the
    last one this thread got is kept (`last_answer`): an absolute expiry in it (IAM's
    `expireTime`) is turned into time left by Google's own clock, not ours."""

    def __init__(self, skew: ClockSkew | None, now: Callable[[], float] = time.time,
                 **kw: Any) -> None:
        super().__init__(**kw)
        self._skew = skew
        self._now = now
        self._last = threading.local()
        self._kw = kw

    def with_client_certificate(self, svid: X509Svid) -> DatedPool:
        """A pool for one exchange that presents `svid` in TLS handshakes (mTLS)."""
        from bridge.clouds.gcp.mtls import client_context

        return DatedPool(self._skew, self._now, **{**self._kw,
                                                   "ssl_context": client_context(svid)})

    def urlopen(  # type: ignore[override] # PoolManager.urlopen itself narrows it
            self, method: str, url: str, redirect: bool = True, **kw: Any,
    ) -> urllib3.BaseHTTPResponse:
        sent = self._now()
        response = super().urlopen(method, url, redirect=redirect, **kw)
        date = response.headers.get("Date")
        self._last.answer = (sent, date)
        if self._skew is not None:
            self._skew.observe(SKEW_SERVICE, date, sent, self._now())
        return response

    def last_answer(self) -> tuple[float, str | None]:
        """(our wall time when it was asked, its Date) of this thread's last answer."""
        answer: tuple[float, str | None] = getattr(self._last, "answer", (self._now(), None))
        return answer

    def local_expiry(self, expiry: float) -> float:
        """An expiry from this thread's last answer, in this host's terms."""
        sent, date = self.last_answer()
        return sent + lifetime(expiry, date, fallback_now=sent)


def pool(timeout: float, skew: ClockSkew | None,
         now: Callable[[], float] = time.time) -> DatedPool:
    return DatedPool(skew, now, timeout=urllib3.Timeout(total=timeout), retries=False)


class GcpFederationHop:
    """JWT-SVID or AWS session -> federated token -> (optionally) a service account token."""

    name = "gcp_federation"

    def __init__(self, target: GcpHopConfig, *, http: DatedPool) -> None:
        self._target = target
        self.scope = f"gcp_sts {target.sts_endpoint}"
        self.quota = sts_quota(target.workload_identity_provider)
        self.judge = SKEW_SERVICE
        self._http = http

    def exchange(self, material: Material) -> GcpToken:
        t = self._target
        http = self._http
        if isinstance(material, X509Svid):  # the exchange (and only it) presents the SVID
            http = self._http.with_client_certificate(material)
        request = Request(http)
        if not t.service_account:
            federated = self._federated_credentials(material, list(t.scopes))
            try:
                federated.refresh(request)
            except exceptions.GoogleAuthError as exc:
                raise classify_sts(exc) from exc
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
            raise classify_iam_refresh(exc, hop="gcp_iam") from exc
        # The federated token (kept for a following generateIdToken) is the refreshed copy's.
        federated_token = getattr(impersonated, "_source_credentials", None)
        # google-auth parses IAM's absolute `expireTime`; STS's relative `expires_in` it
        # already puts in this host's terms (above).
        return GcpToken(access_token=str(impersonated.token),
                        expires_at=http.local_expiry(_epoch(impersonated.expiry)),
                        principal=sa,
                        federated_token=str(federated_token.token) if federated_token else None)

    def _federated_credentials(self, material: Material, scopes: list[str]) -> Any:
        t = self._target
        if isinstance(material, JwtSvid | IdToken):
            return identity_pool.Credentials(
                audience=t.workload_identity_provider, subject_token_type=JWT_TOKEN_TYPE,
                token_url=t.sts_endpoint, subject_token_supplier=_Token(material.token),
                scopes=scopes)
        if isinstance(material, X509Svid):
            return identity_pool.Credentials(
                audience=t.workload_identity_provider, subject_token_type=MTLS_TOKEN_TYPE,
                token_url=t.sts_endpoint, subject_token_supplier=_CertificateChain(material),
                scopes=scopes)
        if isinstance(material, AwsCredentials):
            return aws.Credentials(
                audience=t.workload_identity_provider, subject_token_type=AWS_TOKEN_TYPE,
                token_url=t.sts_endpoint,
                # The aws4_request subject token is a GetCallerIdentity request signed for
                # the session's regional STS (google-auth insists on
                # https://sts.<region>.amazonaws.com); Google replays it there.
                aws_security_credentials_supplier=_AwsSession(
                    material, material.region or "us-east-1"),
                scopes=scopes)
        raise wrong_input(self.name, material)


def _epoch(expiry: datetime | None) -> float:
    """google-auth expiries are naive UTC datetimes."""
    if expiry is None:
        return 0.0
    return expiry.replace(tzinfo=UTC).timestamp()


