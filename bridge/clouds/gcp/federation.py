"""GCP workload identity federation on google-auth: STS token exchange, impersonation.

`GcpFederationHop` exchanges a JWT-SVID (or an ID token) through `identity_pool` with a
programmatic supplier, or an AWS session through `aws` with a programmatic
AWS-credentials supplier (an `aws4_request`-signed GetCallerIdentity is the subject
token). When a service account is configured it then calls `generateAccessToken`
through `delegates` (`impersonated_credentials`, which takes an endpoint override).

google-auth makes one attempt and never retries; retries are the scheduler's.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import urllib3
from google.auth import aws, exceptions, identity_pool, impersonated_credentials
from google.auth.transport.urllib3 import Request

from bridge.clouds.aws.material import AwsCredentials
from bridge.clouds.base import wrong_input
from bridge.clouds.gcp.classify import classify_iam_refresh, classify_sts
from bridge.clouds.gcp.config import JWT_TOKEN_TYPE, GcpHopConfig
from bridge.clouds.gcp.material import GcpToken
from bridge.model import IdToken, JwtSvid, Material
from bridge.skew import ClockSkew

AWS_TOKEN_TYPE = "urn:ietf:params:aws:token-type:aws4_request"  # noqa: S105 - RFC 8693 name
IAM_SCOPE = "https://www.googleapis.com/auth/iam"


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


def pool(timeout: float, skew: ClockSkew | None) -> urllib3.PoolManager:
    """The urllib3 pool google-auth (and the ID-token call) run on: our deadline, no
    retries (the scheduler's), and every response's Date header into the skew estimate."""
    kw: dict[str, Any] = {"timeout": urllib3.Timeout(total=timeout), "retries": False}
    return _SkewObservingPool(skew, **kw) if skew else urllib3.PoolManager(**kw)


class GcpFederationHop:
    """JWT-SVID or AWS session -> federated token -> (optionally) a service account token."""

    name = "gcp_federation"

    def __init__(self, target: GcpHopConfig, *, http: urllib3.PoolManager) -> None:
        self._target = target
        self._http = http

    def exchange(self, material: Material) -> GcpToken:
        t = self._target
        request = Request(self._http)
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
        return GcpToken(access_token=str(impersonated.token),
                        expires_at=_epoch(impersonated.expiry), principal=sa,
                        federated_token=str(federated_token.token) if federated_token else None)

    def _federated_credentials(self, material: Material, scopes: list[str]) -> Any:
        t = self._target
        if isinstance(material, JwtSvid | IdToken):
            return identity_pool.Credentials(
                audience=t.workload_identity_provider, subject_token_type=JWT_TOKEN_TYPE,
                token_url=t.sts_endpoint, subject_token_supplier=_Token(material.token),
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


