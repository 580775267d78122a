"""aws4_request subject tokens: replayed to AWS STS with their Host kept."""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import quote

import pytest

from bridge.devstack.gcp import GcpEmulator, federated_principal
from tests.unit.devstack.gcp.support import (
    AWS_PROVIDER,
    PROVIDER,
    FakeAws,
    aws_exchange,
    caller_identity_xml,
    signed_aws_token,
)


def test_aws_token_replayed_with_original_host(aws_gcp: GcpEmulator, fake_aws: FakeAws) -> None:
    """The signed GetCallerIdentity goes to sts_url with its Host kept; the ARN is the subject."""
    status, document = aws_exchange(aws_gcp, signed_aws_token())
    assert status == 200, document
    ((url, headers),) = fake_aws.calls
    assert url == "http://127.0.0.1:4566/?Action=GetCallerIdentity&Version=2011-06-15"
    assert headers["host"] == "sts.us-east-1.amazonaws.com"
    assert headers["Authorization"].startswith("AWS4-HMAC-SHA256 Credential=ASIAEXAMPLE/")
    assert headers["x-goog-cloud-target-resource"] == AWS_PROVIDER
    grant = aws_gcp.whoami(document["access_token"])
    assert grant is not None
    assert grant.subject == "arn:aws:sts::111122223333:assumed-role/app/s1"
    assert grant.principal == federated_principal(AWS_PROVIDER, grant.subject)


@pytest.mark.parametrize(
    ("token", "error", "fragment"),
    [
        (quote("{not json"), "invalid_request", "parse"),
        (lambda: signed_aws_token(audience=PROVIDER), "invalid_grant", "target-resource"),
        (
            lambda: signed_aws_token().replace("amazonaws.com", "example.com"),
            "invalid_grant",
            "STS",
        ),
        (
            lambda: signed_aws_token().replace("GetCallerIdentity", "GetSessionToken"),
            "invalid_grant",
            "GetCallerIdentity",
        ),
    ],
    ids=["not-json", "target-resource", "not-sts-host", "other-action"],
)
def test_aws_token_refused_before_replay(
    aws_gcp: GcpEmulator,
    fake_aws: FakeAws,
    token: str | Callable[[], str],
    error: str,
    fragment: str,
) -> None:
    """Malformed or misdirected aws4_request tokens are refused without calling AWS."""
    status, document = aws_exchange(aws_gcp, token if isinstance(token, str) else token())
    assert (status, document["error"]) == (400, error)
    assert fragment in document["error_description"]
    assert fake_aws.calls == []


def test_aws_rejection_is_invalid_grant(aws_gcp: GcpEmulator, fake_aws: FakeAws) -> None:
    """An AWS error reply becomes invalid_grant naming AWS's error code."""
    fake_aws.reply = (
        403,
        b"<ErrorResponse><Error><Code>SignatureDoesNotMatch</Code><Message>bad</Message>"
        b"</Error></ErrorResponse>",
    )
    status, document = aws_exchange(aws_gcp, signed_aws_token())
    assert (status, document["error"]) == (400, "invalid_grant")
    assert document["error_description"] == (
        "Received invalid AWS response of type SignatureDoesNotMatch with error message: bad"
    )


def test_aws_account_and_condition(aws_gcp: GcpEmulator, fake_aws: FakeAws) -> None:
    """Another account is invalid_grant; an ARN outside the condition is unauthorized_client."""
    fake_aws.reply = (200, caller_identity_xml("444455556666"))
    assert aws_exchange(aws_gcp, signed_aws_token())[1]["error"] == "invalid_grant"
    aws_gcp.add_aws_provider(
        AWS_PROVIDER,
        account_id="111122223333",
        sts_url="http://127.0.0.1:4566",
        attribute_condition="arn:aws:sts::111122223333:assumed-role/other/*",
    )
    fake_aws.reply = (200, caller_identity_xml("111122223333"))
    assert aws_exchange(aws_gcp, signed_aws_token())[1]["error"] == "unauthorized_client"


def test_aws_unreachable_is_503(aws_gcp: GcpEmulator, fake_aws: FakeAws) -> None:
    """When AWS cannot be reached the exchange is temporarily_unavailable 503."""
    fake_aws.down = True
    assert aws_exchange(aws_gcp, signed_aws_token())[0] == 503
