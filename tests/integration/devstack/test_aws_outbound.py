"""The AWS emulator's sts:GetWebIdentityToken through boto3: signed by a session it
issued, a JWT about the role that verifies against its issuer's published keys, and
STS's refusals."""

from __future__ import annotations

from typing import Any

import boto3
import botocore.exceptions
import jwt
import pytest
from botocore.config import Config

from bridge.devstack import DEMO_ROLE_ARN, DevStack
from bridge.devstack.jwks import fetch_json

pytestmark = pytest.mark.integration


def _signed(stack: DevStack, sts: Any) -> Any:
    token = stack.authority.mint("spiffe://example.org/demo", ["sts.amazonaws.com"], 600)
    c = sts.assume_role_with_web_identity(RoleArn=DEMO_ROLE_ARN, RoleSessionName="test",
                                          WebIdentityToken=token)["Credentials"]
    return boto3.client("sts", region_name="us-east-1", endpoint_url=stack.aws_sts_url,
                        aws_access_key_id=c["AccessKeyId"],
                        aws_secret_access_key=c["SecretAccessKey"],
                        aws_session_token=c["SessionToken"],
                        config=Config(retries={"total_max_attempts": 1}))


@pytest.mark.parametrize("algorithm", ["RS256", "ES384"])
def test_a_token_about_the_role(stack: DevStack, sts: Any, algorithm: str) -> None:
    stack.aws.outbound.enable("111122223333")
    out = _signed(stack, sts).get_web_identity_token(
        Audience=["api://AzureADTokenExchange"], SigningAlgorithm=algorithm,
        DurationSeconds=900)
    token = out["WebIdentityToken"]
    discovery = fetch_json(stack.aws.outbound.issuer + "/.well-known/openid-configuration", 2)
    keys = fetch_json(discovery["jwks_uri"], 2)["keys"]
    kid = jwt.get_unverified_header(token)["kid"]
    key = jwt.PyJWK(next(k for k in keys if k["kid"] == kid), algorithm=algorithm)
    claims = jwt.decode(token, key.key, algorithms=[algorithm],
                        audience="api://AzureADTokenExchange",
                        issuer=stack.aws.outbound.issuer)
    assert claims["sub"] == DEMO_ROLE_ARN
    assert claims["exp"] - claims["iat"] == 900
    assert claims["https://sts.amazonaws.com/"]["aws_account"] == "111122223333"
    assert abs(out["Expiration"].timestamp() - claims["exp"]) < 1


@pytest.mark.parametrize(("kwargs", "code"), [
    ({"SigningAlgorithm": "HS256"}, "ValidationError"),
    ({"SigningAlgorithm": "RS256", "DurationSeconds": 3601}, "ValidationError"),
])
def test_refusals(stack: DevStack, sts: Any, kwargs: dict[str, Any], code: str) -> None:
    stack.aws.outbound.enable("111122223333")
    with pytest.raises(botocore.exceptions.ClientError) as err:
        _signed(stack, sts).get_web_identity_token(Audience=["a"], **kwargs)
    assert err.value.response["Error"]["Code"] == code


def test_disabled_account_and_unsigned_calls(stack: DevStack, sts: Any) -> None:
    stack.aws.outbound.enable("111122223333", enabled=False)
    with pytest.raises(botocore.exceptions.ClientError) as err:
        _signed(stack, sts).get_web_identity_token(Audience=["a"], SigningAlgorithm="RS256")
    assert err.value.response["Error"]["Code"] == "OutboundWebIdentityFederationDisabledException"
    with pytest.raises(botocore.exceptions.ClientError) as err:
        sts.get_web_identity_token(Audience=["a"], SigningAlgorithm="RS256")
    assert err.value.response["Error"]["Code"] == "MissingAuthenticationToken"
