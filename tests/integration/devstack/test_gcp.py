"""The Google emulator with google-auth itself as the client, over loopback HTTP."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import boto3
import jwt
import pytest
import spiffe
import urllib3
from cryptography.hazmat.primitives.asymmetric import ec
from google.auth import aws, exceptions, identity_pool, impersonated_credentials
from google.auth.transport.urllib3 import Request

from bridge.devstack import (
    DEMO_ROLE_ARN,
    DEMO_SERVICE_ACCOUNT,
    DEMO_SERVICE_ACCOUNT_ID,
    FROM_GCP_ROLE_ARN,
    GCP_AWS_PROVIDER,
    GCP_PROVIDER,
    GOOGLE_ID_TOKEN_AUDIENCE,
    TENANT_ROLE_ARN,
    DevStack,
    HttpFailure,
)
from bridge.devstack.gcp import AWS_TOKEN_TYPE, JWT_TOKEN_TYPE, federated_principal

pytestmark = pytest.mark.integration

DEMO_ID = "spiffe://example.org/demo"
UNKNOWN_PROVIDER = GCP_PROVIDER.replace("/providers/spire", "/providers/nope")
SPIRE_POOL = GCP_PROVIDER.rsplit("/providers/", 1)[0].replace("//", "principalSet://", 1) + "/*"
CLOUD_PLATFORM = "https://www.googleapis.com/auth/cloud-platform"
IAM_SCOPE = "https://www.googleapis.com/auth/iam"


class SvidSupplier(identity_pool.SubjectTokenSupplier):
    """Hands google-auth a fixed JWT-SVID and remembers the context it was asked with."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.contexts: list[Any] = []

    def get_subject_token(self, context: Any, request: Any) -> str:
        self.contexts.append(context)
        return self.token


class AwsSessionSupplier(aws.AwsSecurityCredentialsSupplier):
    """Hands google-auth AWS session credentials (as STS returned them) and a region."""

    def __init__(self, credentials: dict[str, Any], region: str = "us-east-1") -> None:
        self.credentials = credentials
        self.region = region

    def get_aws_security_credentials(self, context: Any, request: Any) -> Any:
        c = self.credentials
        return aws.AwsSecurityCredentials(c["AccessKeyId"], c["SecretAccessKey"], c["SessionToken"])

    def get_aws_region(self, context: Any, request: Any) -> str:
        return self.region


@pytest.fixture
def request_() -> Request:
    """google-auth's urllib3 transport (no proxies from the environment)."""
    return Request(urllib3.PoolManager(retries=False))


def _svid(stack: DevStack, sub: str = DEMO_ID, **kwargs: Any) -> str:
    return stack.authority.mint(sub, [GCP_PROVIDER], 300, **kwargs)


def _pool_credentials(
    stack: DevStack,
    token: str,
    *,
    audience: str = GCP_PROVIDER,
    service_account: str | None = DEMO_SERVICE_ACCOUNT,
    **kwargs: Any,
) -> Any:
    return identity_pool.Credentials(
        audience=audience,
        subject_token_type=JWT_TOKEN_TYPE,
        token_url=stack.gcp_sts_url,
        subject_token_supplier=SvidSupplier(token),
        service_account_impersonation_url=(
            stack.gcp.impersonation_url(service_account) if service_account else None
        ),
        scopes=[CLOUD_PLATFORM],
        **kwargs,
    )


def _aws_session(stack: DevStack, sts: Any, role: str = DEMO_ROLE_ARN) -> dict[str, Any]:
    token = stack.authority.mint(DEMO_ID, ["sts.amazonaws.com"], 300)
    response = sts.assume_role_with_web_identity(
        RoleArn=role, RoleSessionName="demo", WebIdentityToken=token
    )
    credentials: dict[str, Any] = response["Credentials"]
    return credentials


def _aws_credentials(stack: DevStack, session: dict[str, Any], **kwargs: Any) -> Any:
    return aws.Credentials(
        audience=GCP_AWS_PROVIDER,
        subject_token_type=AWS_TOKEN_TYPE,
        token_url=stack.gcp_sts_url,
        aws_security_credentials_supplier=AwsSessionSupplier(session),
        scopes=[CLOUD_PLATFORM],
        **kwargs,
    )


def _expires_in(expiry: datetime) -> float:
    """google-auth expiries are naive UTC."""
    return (expiry.replace(tzinfo=UTC) - datetime.now(UTC)).total_seconds()


def _iam_error(exc: exceptions.GoogleAuthError) -> dict[str, Any]:
    """The Google JSON error google-auth's RefreshError carries as its second argument."""
    error: dict[str, Any] = json.loads(exc.args[1])["error"]
    return error


# -- identity pool (JWT-SVID) ------------------------------------------------------------


def test_identity_pool_with_impersonation(
    stack: DevStack, workload: spiffe.WorkloadApiClient, request_: Request
) -> None:
    """An SVID from the agent becomes a demo service-account token valid for an hour."""
    svid = workload.fetch_jwt_svid({GCP_PROVIDER}).token
    credentials = _pool_credentials(stack, svid)
    credentials.refresh(request_)
    assert credentials.token.startswith("ya29.dev-")
    assert 3590 <= _expires_in(credentials.expiry) <= 3600
    grant = stack.gcp.whoami(credentials.token)
    assert grant is not None
    assert grant.principal == f"serviceAccount:{DEMO_SERVICE_ACCOUNT}"
    assert grant.scopes == (CLOUD_PLATFORM,)


def test_wire_requests_google_auth_sends(stack: DevStack, request_: Request) -> None:
    """google-auth's STS form and IAM body are what LIBRARIES.md measured."""
    svid = _svid(stack)
    _pool_credentials(stack, svid).refresh(request_)
    token_request, iam_request = stack.gcp.requests
    assert token_request.path == "/v1/token"
    assert token_request.form == {
        "grant_type": "urn:ietf:params:oauth:grant-type:token-exchange",
        "audience": GCP_PROVIDER,
        "scope": IAM_SCOPE,  # google-auth asks for the iam scope when impersonating
        "requested_token_type": "urn:ietf:params:oauth:token-type:access_token",
        "subject_token": svid,
        "subject_token_type": JWT_TOKEN_TYPE,
    }
    assert "sa-impersonation/true" in token_request.headers["x-goog-api-client"]
    assert iam_request.path == (
        f"/v1/projects/-/serviceAccounts/{DEMO_SERVICE_ACCOUNT}:generateAccessToken"
    )
    assert iam_request.json_body == {
        "delegates": None,
        "scope": [CLOUD_PLATFORM],
        "lifetime": "3600s",
    }
    federated = stack.gcp.issued[0]
    assert iam_request.headers["authorization"] == f"Bearer {federated.token}"


def test_impersonation_lifetime_option(stack: DevStack, request_: Request) -> None:
    """service_account_impersonation_options sets the requested lifetime."""
    credentials = _pool_credentials(
        stack, _svid(stack), service_account_impersonation_options={"token_lifetime_seconds": 1800}
    )
    credentials.refresh(request_)
    assert 1790 <= _expires_in(credentials.expiry) <= 1800


def test_identity_pool_without_impersonation(stack: DevStack, request_: Request) -> None:
    """Without a service account the federated token itself comes back, for the SVID's sub."""
    credentials = _pool_credentials(stack, _svid(stack), service_account=None)
    credentials.refresh(request_)
    assert 3590 <= _expires_in(credentials.expiry) <= 3600
    grant = stack.gcp.whoami(credentials.token)
    assert grant is not None
    assert grant.principal == federated_principal(GCP_PROVIDER, DEMO_ID)
    assert grant.principal == (
        "principal://iam.googleapis.com/projects/123456/locations/global/"
        f"workloadIdentityPools/spire/subject/{DEMO_ID}"
    )
    assert grant.scopes == (CLOUD_PLATFORM,)


def _es384(stack: DevStack) -> str:
    """An SVID signed ES384, as SPIRE with jwt_key_type ec-p384 would mint."""
    key = ec.generate_private_key(ec.SECP384R1())
    now = int(datetime.now(UTC).timestamp())
    claims = {"sub": DEMO_ID, "aud": [GCP_PROVIDER], "iss": stack.issuer}
    claims |= {"iat": now, "exp": now + 300}
    return jwt.encode(claims, key, algorithm="ES384", headers={"kid": "p384"})


@pytest.mark.parametrize(
    ("make_token", "audience", "error"),
    [
        (lambda s: s.authority.mint(DEMO_ID, ["sts.amazonaws.com"], 300), None, "invalid_grant"),
        (lambda s: _svid(s, "spiffe://evil.org/x"), None, "unauthorized_client"),
        (_svid, UNKNOWN_PROVIDER, "invalid_target"),
        (lambda s: _svid(s, headers={"kid": ""}), None, "invalid_grant"),
        (_es384, None, "invalid_grant"),
        (lambda s: _svid(s).replace(".", "!", 1), None, "invalid_grant"),
    ],
    ids=["wrong-aud", "condition", "unknown-provider", "missing-kid", "es384", "garbage"],
)
def test_exchange_refusals(
    stack: DevStack, request_: Request, make_token: Any, audience: str | None, error: str
) -> None:
    """Refusals reach google-auth as OAuthError carrying Google's RFC 6749 code."""
    credentials = _pool_credentials(
        stack, make_token(stack), audience=audience or GCP_PROVIDER, service_account=None
    )
    with pytest.raises(exceptions.OAuthError) as caught:
        credentials.refresh(request_)
    assert json.loads(caught.value.args[1])["error"] == error
    assert caught.value.args[0].startswith(f"Error code {error}: ")


def test_lifetime_over_maximum(stack: DevStack, request_: Request) -> None:
    """Asking 2 h from an account limited to 1 h is 400 INVALID_ARGUMENT (RefreshError)."""
    credentials = _pool_credentials(
        stack, _svid(stack), service_account_impersonation_options={"token_lifetime_seconds": 7200}
    )
    with pytest.raises(exceptions.RefreshError) as caught:
        credentials.refresh(request_)
    error = _iam_error(caught.value)
    assert (error["code"], error["status"]) == (400, "INVALID_ARGUMENT")
    assert "lifetime" in error["message"]


def test_no_workload_identity_user(stack: DevStack, request_: Request) -> None:
    """An account without a binding for the pool is 403 PERMISSION_DENIED."""
    lonely = "lonely@dev-project.iam.gserviceaccount.com"
    stack.gcp.add_service_account(lonely)
    credentials = _pool_credentials(stack, _svid(stack), service_account=lonely)
    with pytest.raises(exceptions.RefreshError) as caught:
        credentials.refresh(request_)
    assert _iam_error(caught.value) == {
        "code": 403,
        "message": (
            "Permission 'iam.serviceAccounts.getAccessToken' denied on resource "
            "(or it may not exist)."
        ),
        "status": "PERMISSION_DENIED",
    }


# -- delegation through impersonated_credentials -----------------------------------------


def _delegation_chain(stack: DevStack, hops: int) -> list[str]:
    """hop1..hopN (first bound to the spire pool), each token creator on the next, then target."""
    emails = [f"hop{i}@dev-project.iam.gserviceaccount.com" for i in range(1, hops + 1)]
    target = "target@dev-project.iam.gserviceaccount.com"
    holder = SPIRE_POOL
    for email in [*emails, target]:
        if holder == SPIRE_POOL:
            stack.gcp.add_service_account(email, workload_identity_users=[SPIRE_POOL])
        else:
            stack.gcp.add_service_account(email, token_creators=[holder])
        holder = email
    return emails


def _impersonate(stack: DevStack, delegates: list[str], request_: Request) -> Any:
    source = _pool_credentials(stack, _svid(stack), service_account=None)
    target = "target@dev-project.iam.gserviceaccount.com"
    credentials = impersonated_credentials.Credentials(
        source_credentials=source,
        target_principal=target,
        target_scopes=[CLOUD_PLATFORM],
        delegates=[f"projects/-/serviceAccounts/{d}" for d in delegates],
        lifetime=3600,
        iam_endpoint_override=stack.gcp.impersonation_url(target),
    )
    credentials.refresh(request_)
    return credentials


@pytest.mark.parametrize("hops", [0, 1, 3])
def test_delegation_chain(stack: DevStack, request_: Request, hops: int) -> None:
    """Chains of 0, 1 and 3 delegates yield a token for the target account."""
    delegates = _delegation_chain(stack, hops)
    credentials = _impersonate(stack, delegates, request_)
    grant = stack.gcp.whoami(credentials.token)
    assert grant is not None
    assert grant.service_account == "target@dev-project.iam.gserviceaccount.com"
    assert grant.delegates == tuple(delegates)


def test_delegation_chain_missing_middle_binding(stack: DevStack, request_: Request) -> None:
    """Without hop2's token-creator binding on hop3, a 3-delegate chain is 403."""
    delegates = _delegation_chain(stack, 3)
    stack.gcp.add_service_account(delegates[2])  # hop3 loses its binding for hop2
    with pytest.raises(exceptions.RefreshError) as caught:
        _impersonate(stack, delegates, request_)
    assert _iam_error(caught.value)["status"] == "PERMISSION_DENIED"


# -- AWS -> GCP ----------------------------------------------------------------------------


def test_aws_credentials_exchange(stack: DevStack, sts: Any, request_: Request) -> None:
    """google-auth's aws4_request token, replayed to the AWS emulator, federates the session."""
    session = _aws_session(stack, sts)
    credentials = _aws_credentials(stack, session)
    credentials.refresh(request_)
    grant = stack.gcp.whoami(credentials.token)
    assert grant is not None
    assert grant.subject == "arn:aws:sts::111122223333:assumed-role/demo/demo"
    assert grant.provider == GCP_AWS_PROVIDER
    replayed = stack.aws.requests[-1]
    assert replayed.action == "GetCallerIdentity"
    assert replayed.headers["host"] == "sts.us-east-1.amazonaws.com"


def test_aws_credentials_with_impersonation(stack: DevStack, sts: Any, request_: Request) -> None:
    """AWS session -> federated token -> demo service account token."""
    credentials = _aws_credentials(
        stack,
        _aws_session(stack, sts),
        service_account_impersonation_url=stack.gcp.impersonation_url(DEMO_SERVICE_ACCOUNT),
    )
    credentials.refresh(request_)
    grant = stack.gcp.whoami(credentials.token)
    assert grant is not None
    assert grant.service_account == DEMO_SERVICE_ACCOUNT


def test_aws_tampered_secret(stack: DevStack, sts: Any, request_: Request) -> None:
    """A request signed with the wrong secret is invalid_grant naming AWS's error."""
    session = _aws_session(stack, sts)
    session["SecretAccessKey"] = session["SecretAccessKey"][::-1]
    with pytest.raises(exceptions.OAuthError) as caught:
        _aws_credentials(stack, session).refresh(request_)
    description = json.loads(caught.value.args[1])["error_description"]
    assert description.startswith("Received invalid AWS response of type SignatureDoesNotMatch")


def test_aws_other_account(stack: DevStack, sts: Any, request_: Request) -> None:
    """A chained session in account 444455556666 is refused by the 111122223333 provider."""
    first = _aws_session(stack, sts)
    signed = boto3.client(
        "sts",
        region_name="us-east-1",
        endpoint_url=stack.aws_sts_url,
        aws_access_key_id=first["AccessKeyId"],
        aws_secret_access_key=first["SecretAccessKey"],
        aws_session_token=first["SessionToken"],
    )
    tenant = signed.assume_role(RoleArn=TENANT_ROLE_ARN, RoleSessionName="tenant")["Credentials"]
    with pytest.raises(exceptions.OAuthError) as caught:
        _aws_credentials(stack, tenant).refresh(request_)
    assert "444455556666" in json.loads(caught.value.args[1])["error_description"]


# -- GCP -> AWS ------------------------------------------------------------------------------


def test_id_token_assumes_from_gcp_role(stack: DevStack, sts: Any, request_: Request) -> None:
    """generateIdToken's token is accepted by AssumeRoleWithWebIdentity for from-gcp."""
    federated = _pool_credentials(stack, _svid(stack), service_account=None)
    federated.refresh(request_)
    http = urllib3.PoolManager(retries=False)
    response = http.request(
        "POST",
        f"{stack.gcp_iam_url}/v1/projects/-/serviceAccounts/{DEMO_SERVICE_ACCOUNT}:generateIdToken",
        body=json.dumps({"audience": GOOGLE_ID_TOKEN_AUDIENCE, "includeEmail": True}).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {federated.token}"},
    )
    assert response.status == 200
    token = json.loads(response.data)["token"]
    assumed = sts.assume_role_with_web_identity(
        RoleArn=FROM_GCP_ROLE_ARN, RoleSessionName="from-gcp", WebIdentityToken=token
    )
    assert assumed["SubjectFromWebIdentityToken"] == DEMO_SERVICE_ACCOUNT_ID
    assert assumed["Provider"] == stack.google_issuer
    assert assumed["AssumedRoleUser"]["Arn"] == (
        "arn:aws:sts::111122223333:assumed-role/from-gcp/from-gcp"
    )


def test_google_issuer_discovery_over_http(stack: DevStack) -> None:
    """The ID-token issuer's discovery and JWKS are served on the emulator's port."""
    http = urllib3.PoolManager(retries=False)
    discovery = json.loads(
        http.request("GET", stack.google_issuer + "/.well-known/openid-configuration").data
    )
    assert discovery["issuer"] == stack.google_issuer
    keys = json.loads(http.request("GET", discovery["jwks_uri"]).data)["keys"]
    assert [(k["kty"], k["alg"]) for k in keys] == [("RSA", "RS256")]


# -- faults --------------------------------------------------------------------------------


def test_sts_fault_reaches_google_auth(stack: DevStack, request_: Request) -> None:
    """A queued STS 503 is an OAuthError once; the next refresh succeeds."""
    stack.gcp.faults.fail_next("token", HttpFailure(503, "temporarily_unavailable"))
    credentials = _pool_credentials(stack, _svid(stack), service_account=None)
    with pytest.raises(exceptions.OAuthError) as caught:
        credentials.refresh(request_)
    assert "temporarily_unavailable" in str(caught.value)
    credentials.refresh(request_)
    assert credentials.token


def test_iam_fault_reaches_google_auth(stack: DevStack, request_: Request) -> None:
    """A queued IAM 503 is a RefreshError carrying status UNAVAILABLE."""
    stack.gcp.faults.fail_next("generateAccessToken", HttpFailure(503, "UNAVAILABLE"))
    with pytest.raises(exceptions.RefreshError) as caught:
        _pool_credentials(stack, _svid(stack)).refresh(request_)
    assert _iam_error(caught.value)["status"] == "UNAVAILABLE"
