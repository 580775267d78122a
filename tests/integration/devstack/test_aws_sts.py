"""The STS emulator through boto3: real SVIDs in, credentials or AWS's refusals out."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import jwt
import pytest
import spiffe
from botocore.exceptions import ClientError

from bridge.devstack import DEMO_ROLE_ARN, DevStack, HttpFailure, OidcDiscoveryServer

pytestmark = pytest.mark.integration

AUD = "sts.amazonaws.com"
DEMO_ID = "spiffe://example.org/demo"


def _assume(sts: Any, token: str, *, role: str = DEMO_ROLE_ARN, duration: int = 3600) -> Any:
    return sts.assume_role_with_web_identity(
        RoleArn=role, RoleSessionName="demo", WebIdentityToken=token, DurationSeconds=duration
    )


def _refusal(sts: Any, token: str, **kwargs: Any) -> tuple[str, int, str]:
    with pytest.raises(ClientError) as caught:
        _assume(sts, token, **kwargs)
    response = caught.value.response
    return (
        response["Error"]["Code"],
        response["ResponseMetadata"]["HTTPStatusCode"],
        response["Error"]["Message"],
    )


def test_real_svid_gets_credentials(sts: Any, workload: spiffe.WorkloadApiClient) -> None:
    """An SVID from the fake agent buys credentials with AWS's response fields."""
    svid = workload.fetch_jwt_svid({AUD})
    before = datetime.now(UTC)
    response = _assume(sts, svid.token, duration=7200)
    credentials = response["Credentials"]
    assert credentials["AccessKeyId"].startswith("ASIA")
    assert len(credentials["SecretAccessKey"]) == 40
    assert credentials["SessionToken"]
    expiration = credentials["Expiration"].astimezone(UTC)
    assert 7198 <= (expiration - before).total_seconds() <= 7205
    assert response["AssumedRoleUser"]["Arn"] == (
        "arn:aws:sts::111122223333:assumed-role/demo/demo"
    )
    assert response["SubjectFromWebIdentityToken"] == DEMO_ID
    assert response["Audience"] == AUD


def test_recorded_request_parameters(
    stack: DevStack, sts: Any, workload: spiffe.WorkloadApiClient
) -> None:
    """boto3 sends exactly Action, Version, RoleArn, RoleSessionName, token and duration."""
    token = workload.fetch_jwt_svid({AUD}).token
    _assume(sts, token)
    (recorded,) = stack.aws.requests
    assert recorded.method == "POST"
    assert recorded.path == "/"
    assert set(recorded.params) == {
        "Action",
        "Version",
        "RoleArn",
        "RoleSessionName",
        "WebIdentityToken",
        "DurationSeconds",
    }
    assert recorded.params["Action"] == "AssumeRoleWithWebIdentity"
    assert recorded.params["Version"] == "2011-06-15"
    assert recorded.params["WebIdentityToken"] == token
    assert "Authorization" not in recorded.headers


def test_wrong_audience(sts: Any, workload: spiffe.WorkloadApiClient) -> None:
    """An SVID for another audience is InvalidIdentityToken 400."""
    token = workload.fetch_jwt_svid({"not-sts"}).token
    assert _refusal(sts, token)[:2] == ("InvalidIdentityToken", 400)


def test_wrong_subject(stack: DevStack, sts: Any, workload: spiffe.WorkloadApiClient) -> None:
    """A role trusting another sub refuses with AccessDenied 403."""
    role = "arn:aws:iam::111122223333:role/other-only"
    stack.aws.add_role(role, provider_url=stack.issuer, aud=AUD, sub="spiffe://example.org/other")
    token = workload.fetch_jwt_svid({AUD}, subject=spiffe.SpiffeId(DEMO_ID)).token
    code, status, message = _refusal(sts, token, role=role)
    assert (code, status) == ("AccessDenied", 403)
    assert message == "Not authorized to perform sts:AssumeRoleWithWebIdentity"


def test_expired_token(stack: DevStack, sts: Any) -> None:
    """A token past its exp is ExpiredTokenException 400."""
    token = stack.authority.mint(DEMO_ID, [AUD], 300, iat=int(time.time()) - 600)
    assert _refusal(sts, token)[:2] == ("ExpiredTokenException", 400)


def test_foreign_key_same_kid(stack: DevStack, sts: Any) -> None:
    """A token signed by another key under the published kid is InvalidIdentityToken."""
    token = stack.authority.impostor().mint(DEMO_ID, [AUD], 300)
    assert jwt.get_unverified_header(token)["kid"] == stack.authority.active_kid
    assert _refusal(sts, token)[:2] == ("InvalidIdentityToken", 400)


@pytest.mark.parametrize("alg", ["HS256", "none"])
def test_symmetric_and_unsigned_algs(stack: DevStack, sts: Any, alg: str) -> None:
    """alg HS256 or none is InvalidIdentityToken, whatever the claims say."""
    now = int(time.time())
    claims = {"sub": DEMO_ID, "aud": [AUD], "iss": stack.issuer, "iat": now, "exp": now + 300}
    key = "s" * 32 if alg == "HS256" else ""
    token = jwt.encode(claims, key, algorithm=alg, headers={"kid": stack.authority.active_kid})
    assert _refusal(sts, token)[:2] == ("InvalidIdentityToken", 400)


def test_duration_above_role_max(
    stack: DevStack, sts: Any, workload: spiffe.WorkloadApiClient
) -> None:
    """DurationSeconds above the role's MaxSessionDuration is ValidationError 400."""
    role = "arn:aws:iam::111122223333:role/one-hour"
    stack.aws.add_role(role, provider_url=stack.issuer, aud=AUD, sub=None)
    token = workload.fetch_jwt_svid({AUD}).token
    code, status, message = _refusal(sts, token, role=role, duration=3601)
    assert (code, status) == ("ValidationError", 400)
    assert "MaxSessionDuration" in message


def test_unregistered_issuer(stack: DevStack, sts: Any) -> None:
    """An issuer AWS has no provider for is InvalidIdentityToken 400."""
    token = stack.authority.mint(DEMO_ID, [AUD], 300, extra_claims={"iss": "https://nope.test"})
    code, status, message = _refusal(sts, token)
    assert (code, status) == ("InvalidIdentityToken", 400)
    assert "No OpenIDConnect provider found" in message


def test_issuer_discovery_down(stack: DevStack, sts: Any) -> None:
    """A registered issuer whose discovery is unreachable is IDPCommunicationError 400."""
    dead = OidcDiscoveryServer(stack.authority.jwks)
    dead.start()
    dead_issuer = dead.issuer
    dead.stop()
    stack.aws.register_oidc_provider(dead_issuer, [AUD])
    stack.aws.add_role(DEMO_ROLE_ARN, provider_url=dead_issuer, aud=AUD, sub=None)
    token = stack.authority.mint(DEMO_ID, [AUD], 300, extra_claims={"iss": dead_issuer})
    assert _refusal(sts, token)[:2] == ("IDPCommunicationError", 400)


def test_rotated_key_accepted_after_jwks_cached(
    stack: DevStack, sts: Any, workload: spiffe.WorkloadApiClient
) -> None:
    """After a rotation, STS refetches the JWKS for the unknown kid and accepts the SVID."""
    _assume(sts, workload.fetch_jwt_svid({AUD}).token)
    stack.rotate_keys()
    token = workload.fetch_jwt_svid({AUD}).token
    assert jwt.get_unverified_header(token)["kid"] == stack.authority.active_kid
    assert _assume(sts, token)["Credentials"]["AccessKeyId"]


def test_fault_503_then_success(
    stack: DevStack, sts: Any, workload: spiffe.WorkloadApiClient
) -> None:
    """A queued ServiceUnavailable fails one call with 503; the next call succeeds."""
    stack.aws.faults.fail_next("AssumeRoleWithWebIdentity", HttpFailure(503, "ServiceUnavailable"))
    token = workload.fetch_jwt_svid({AUD}).token
    assert _refusal(sts, token)[:2] == ("ServiceUnavailable", 503)
    assert _assume(sts, token)["Credentials"]["AccessKeyId"]
    assert len(stack.aws.requests) == 2


def test_fault_throttling_maps_in_botocore(
    stack: DevStack, sts: Any, workload: spiffe.WorkloadApiClient
) -> None:
    """A queued Throttling fault reaches boto3 as code Throttling with HTTP 400."""
    stack.aws.faults.fail_next("AssumeRoleWithWebIdentity", HttpFailure(400, "Throttling"))
    token = workload.fetch_jwt_svid({AUD}).token
    assert _refusal(sts, token)[:2] == ("Throttling", 400)
