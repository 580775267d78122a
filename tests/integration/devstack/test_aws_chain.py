"""AssumeRole and GetCallerIdentity through boto3: SigV4 checked with emulator-issued keys."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from bridge.devstack import (
    DEMO_ROLE_ARN,
    FROM_GCP_ROLE_ARN,
    TENANT_ROLE_ARN,
    AwsStsEmulator,
    DevStack,
)

pytestmark = pytest.mark.integration

AUD = "sts.amazonaws.com"
DEMO_ID = "spiffe://example.org/demo"
CHAINING_LIMIT = (
    "The requested DurationSeconds exceeds the 1 hour session limit for roles assumed by "
    "role chaining."
)


def _client(url: str, credentials: dict[str, Any] | None = None, **overrides: str) -> Any:
    """A boto3 STS client signing with `credentials` (field names as STS returns them)."""
    keys: dict[str, str] = {}
    if credentials is not None:
        keys = {
            "aws_access_key_id": credentials["AccessKeyId"],
            "aws_secret_access_key": credentials["SecretAccessKey"],
            "aws_session_token": credentials["SessionToken"],
        }
    keys.update(overrides)
    return boto3.client(
        "sts",
        region_name="us-east-1",
        endpoint_url=url,
        config=Config(retries={"total_max_attempts": 1}),
        **keys,
    )


def _web_identity(sts: Any, stack: DevStack, *, session: str = "demo") -> dict[str, Any]:
    token = stack.authority.mint(DEMO_ID, [AUD], 300)
    response = sts.assume_role_with_web_identity(
        RoleArn=DEMO_ROLE_ARN, RoleSessionName=session, WebIdentityToken=token
    )
    credentials: dict[str, Any] = response["Credentials"]
    return credentials


def _refusal(call: Any, **kwargs: Any) -> tuple[str, int, str]:
    with pytest.raises(ClientError) as caught:
        call(**kwargs)
    response = caught.value.response
    return (
        response["Error"]["Code"],
        response["ResponseMetadata"]["HTTPStatusCode"],
        response["Error"]["Message"],
    )


@pytest.fixture
def session(stack: DevStack, sts: Any) -> dict[str, Any]:
    """Credentials of a web identity session on the demo role."""
    return _web_identity(sts, stack)


@pytest.fixture
def signed(stack: DevStack, session: dict[str, Any]) -> Any:
    """A boto3 STS client signing with the demo session's credentials."""
    return _client(stack.aws_sts_url, session)


def test_assume_role_chain(stack: DevStack, signed: Any) -> None:
    """A demo session assumes the tenant role: chained credentials for at most an hour."""
    before = datetime.now(UTC)
    response = signed.assume_role(RoleArn=TENANT_ROLE_ARN, RoleSessionName="chained")
    assert response["AssumedRoleUser"]["Arn"] == (
        "arn:aws:sts::444455556666:assumed-role/tenant/chained"
    )
    assert response["AssumedRoleUser"]["AssumedRoleId"].endswith(":chained")
    credentials = response["Credentials"]
    assert credentials["AccessKeyId"].startswith("ASIA")
    remaining = (credentials["Expiration"].astimezone(UTC) - before).total_seconds()
    assert 3595 <= remaining <= 3605
    recorded = stack.aws.requests[-1]
    assert recorded.action == "AssumeRole"
    assert recorded.headers["Authorization"].startswith("AWS4-HMAC-SHA256 Credential=ASIA")
    issued = stack.aws.issued[-1]
    assert issued.subject == "arn:aws:sts::111122223333:assumed-role/demo/demo"


def test_get_caller_identity(stack: DevStack, signed: Any) -> None:
    """GetCallerIdentity names the calling session: assumed-role ARN, role ID, account."""
    identity = signed.get_caller_identity()
    assert identity["Arn"] == "arn:aws:sts::111122223333:assumed-role/demo/demo"
    assert identity["Account"] == "111122223333"
    assert identity["UserId"] == f"{stack.aws.roles[DEMO_ROLE_ARN].role_id}:demo"


def test_chained_session_identity_and_rechain(stack: DevStack, signed: Any) -> None:
    """Chained credentials sign too, and an account-root principal trusts them."""
    chained = signed.assume_role(RoleArn=TENANT_ROLE_ARN, RoleSessionName="t1")["Credentials"]
    tenant = _client(stack.aws_sts_url, chained)
    assert tenant.get_caller_identity()["Arn"] == (
        "arn:aws:sts::444455556666:assumed-role/tenant/t1"
    )
    deeper = "arn:aws:iam::444455556666:role/deeper"
    stack.aws.add_role(deeper, trusted_principals=["arn:aws:iam::444455556666:root"])
    assert tenant.assume_role(RoleArn=deeper, RoleSessionName="t2")["AssumedRoleUser"]["Arn"]


def test_duration_over_an_hour_fails_when_chained(signed: Any) -> None:
    """DurationSeconds 3601 is the role-chaining ValidationError, whatever the role max."""
    code, status, message = _refusal(
        signed.assume_role,
        RoleArn=TENANT_ROLE_ARN,
        RoleSessionName="long",
        DurationSeconds=3601,
    )
    assert (code, status, message) == ("ValidationError", 400, CHAINING_LIMIT)


def test_external_id(stack: DevStack, signed: Any) -> None:
    """A role with sts:ExternalId needs exactly that ExternalId."""
    role = "arn:aws:iam::444455556666:role/vendor"
    stack.aws.add_role(role, trusted_principals=[DEMO_ROLE_ARN], external_id="ext-123")
    assert _refusal(signed.assume_role, RoleArn=role, RoleSessionName="vendor")[:2] == (
        "AccessDenied",
        403,
    )
    code, status, message = _refusal(
        signed.assume_role, RoleArn=role, RoleSessionName="vendor", ExternalId="ext-999"
    )
    assert (code, status) == ("AccessDenied", 403)
    assert message == (
        "User: arn:aws:sts::111122223333:assumed-role/demo/demo is not authorized to perform: "
        f"sts:AssumeRole on resource: {role}"
    )
    response = signed.assume_role(RoleArn=role, RoleSessionName="vendor", ExternalId="ext-123")
    assert response["Credentials"]["AccessKeyId"]


def test_untrusted_caller(stack: DevStack, signed: Any) -> None:
    """A role trusting only other principals is AccessDenied; unknown roles too."""
    role = "arn:aws:iam::444455556666:role/gcp-only"
    stack.aws.add_role(role, trusted_principals=[FROM_GCP_ROLE_ARN])
    assert _refusal(signed.assume_role, RoleArn=role, RoleSessionName="xx")[:2] == (
        "AccessDenied",
        403,
    )
    missing = "arn:aws:iam::444455556666:role/missing"
    assert _refusal(signed.assume_role, RoleArn=missing, RoleSessionName="xx")[0] == "AccessDenied"


def test_assumed_role_glob(stack: DevStack, sts: Any) -> None:
    """An assumed-role ARN glob trusts matching session names only."""
    role = "arn:aws:iam::444455556666:role/ci"
    stack.aws.add_role(
        role, trusted_principals=["arn:aws:sts::111122223333:assumed-role/demo/ci-*"]
    )
    ci = _client(stack.aws_sts_url, _web_identity(sts, stack, session="ci-7"))
    assert ci.assume_role(RoleArn=role, RoleSessionName="xx")["Credentials"]["AccessKeyId"]
    other = _client(stack.aws_sts_url, _web_identity(sts, stack, session="dev-7"))
    assert _refusal(other.assume_role, RoleArn=role, RoleSessionName="xx")[0] == "AccessDenied"


def test_tampered_secret(stack: DevStack, session: dict[str, Any]) -> None:
    """A wrong secret key fails SignatureDoesNotMatch 403."""
    tampered = {**session, "SecretAccessKey": session["SecretAccessKey"][::-1]}
    client = _client(stack.aws_sts_url, tampered)
    code, status, message = _refusal(
        client.assume_role, RoleArn=TENANT_ROLE_ARN, RoleSessionName="xx"
    )
    assert (code, status) == ("SignatureDoesNotMatch", 403)
    assert message.startswith("The request signature we calculated does not match")
    assert _refusal(client.get_caller_identity)[0] == "SignatureDoesNotMatch"


@pytest.mark.parametrize(
    "change",
    [
        {"AccessKeyId": "ASIAUNKNOWNKEY000000"},
        {"SessionToken": "not-the-session-token"},
    ],
    ids=["unknown-key", "wrong-session-token"],
)
def test_invalid_client_token(
    stack: DevStack, session: dict[str, Any], change: dict[str, str]
) -> None:
    """Keys not issued here, or another session token, are InvalidClientTokenId 403."""
    client = _client(stack.aws_sts_url, {**session, **change})
    assert _refusal(client.get_caller_identity)[:2] == ("InvalidClientTokenId", 403)


def test_unsigned_assume_role(sts: Any) -> None:
    """An unsigned AssumeRole is MissingAuthenticationToken 403."""
    code, status, _ = _refusal(sts.assume_role, RoleArn=TENANT_ROLE_ARN, RoleSessionName="xx")
    assert (code, status) == ("MissingAuthenticationToken", 403)


class _Clock:
    """A settable clock for the emulator (real time plus an offset)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return datetime.now(UTC).timestamp() + self.offset


@pytest.fixture
def clock() -> _Clock:
    return _Clock()


@pytest.fixture
def timed_sts(stack: DevStack, clock: _Clock) -> Iterator[AwsStsEmulator]:
    """A second STS emulator on the stack's issuer, with a clock tests can move."""
    emulator = AwsStsEmulator(clock=clock)
    emulator.register_oidc_provider(stack.issuer, [AUD])
    emulator.add_role(DEMO_ROLE_ARN, provider_url=stack.issuer, aud=AUD, sub=None)
    emulator.add_role(TENANT_ROLE_ARN, trusted_principals=[DEMO_ROLE_ARN])
    with emulator:
        yield emulator


def _timed_session(stack: DevStack, emulator: AwsStsEmulator, duration: int) -> Any:
    unsigned = _client(emulator.url)
    token = stack.authority.mint(DEMO_ID, [AUD], 300)
    credentials = unsigned.assume_role_with_web_identity(
        RoleArn=DEMO_ROLE_ARN,
        RoleSessionName="timed",
        WebIdentityToken=token,
        DurationSeconds=duration,
    )["Credentials"]
    return _client(emulator.url, credentials)


def test_expired_session(stack: DevStack, timed_sts: AwsStsEmulator, clock: _Clock) -> None:
    """Once the session has expired, signed calls are ExpiredToken 400."""
    client = _timed_session(stack, timed_sts, 900)
    clock.offset = 1000
    code, status, message = _refusal(client.get_caller_identity)
    assert (code, status, message) == (
        "ExpiredToken",
        400,
        "The security token included in the request is expired",
    )


def test_stale_signature(stack: DevStack, timed_sts: AwsStsEmulator, clock: _Clock) -> None:
    """A request signed more than 15 minutes before the server's time fails to verify."""
    client = _timed_session(stack, timed_sts, 3600)
    clock.offset = 16 * 60
    code, status, message = _refusal(
        client.assume_role, RoleArn=TENANT_ROLE_ARN, RoleSessionName="xx"
    )
    assert (code, status) == ("SignatureDoesNotMatch", 403)
    assert message.startswith("Signature expired: ")
