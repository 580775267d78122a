"""AWS's parameter constraints, reported together, and the Policy rules."""

from __future__ import annotations

import json

import pytest

from bridge.devstack import JwtAuthority
from bridge.devstack.aws import AwsStsEmulator
from tests.unit.devstack.aws.support import NS, ROLE, assume, call_sts, error_of, mint_token


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({"RoleSessionName": "a/b"}, "roleSessionName"),
        ({"RoleSessionName": "x"}, "greater than or equal to 2"),
        ({"RoleSessionName": "s" * 65}, "less than or equal to 64"),
        ({"DurationSeconds": "899"}, "greater than or equal to 900"),
        ({"DurationSeconds": "43201"}, "less than or equal to 43200"),
        ({"DurationSeconds": "1h"}, "integer"),
        ({"RoleArn": "arn:aws:iam::1:role"}, "greater than or equal to 20"),
        ({"RoleArn": "arn:aws:iam::111122223333:user/bob"}, "Request ARN is invalid"),
        ({"WebIdentityToken": "abc"}, "webIdentityToken"),
        ({"WebIdentityToken": "a" * 20001}, "less than or equal to 20000"),
        ({"Policy": ""}, "policy"),
    ],
    ids=[
        "session-slash",
        "session-short",
        "session-long",
        "duration-low",
        "duration-high",
        "duration-nan",
        "arn-short",
        "arn-user",
        "token-short",
        "token-long",
        "policy-empty",
    ],
)
def test_parameter_constraints(
    sts: AwsStsEmulator, authority: JwtAuthority, params: dict[str, str], fragment: str
) -> None:
    """Model constraint violations are ValidationError 400 naming the member."""
    base = {"RoleArn": ROLE, "RoleSessionName": "app", "WebIdentityToken": mint_token(authority)}
    status, root, _ = call_sts(sts, **{**base, **params})
    _, code, message = error_of(root)
    assert (status, code) == (400, "ValidationError")
    assert fragment in message


def test_missing_parameter_is_validation_error(sts: AwsStsEmulator) -> None:
    """A missing required parameter reads 'Member must not be null'."""
    status, root, _ = call_sts(sts, RoleArn=ROLE, RoleSessionName="app")
    assert status == 400
    assert "must not be null" in error_of(root)[2]


def test_malformed_policy_document(sts: AwsStsEmulator, authority: JwtAuthority) -> None:
    """A session policy that is not JSON is MalformedPolicyDocument."""
    status, root = assume(sts, mint_token(authority), Policy="{not json")
    assert (status, error_of(root)[1]) == (400, "MalformedPolicyDocument")


def test_policy_adds_packed_policy_size(sts: AwsStsEmulator, authority: JwtAuthority) -> None:
    """With a Policy, the result reports PackedPolicySize."""
    policy = json.dumps({"Version": "2012-10-17", "Statement": []})
    status, root = assume(sts, mint_token(authority), Policy=policy)
    assert status == 200
    path = "sts:AssumeRoleWithWebIdentityResult/sts:PackedPolicySize"
    assert root.findtext(path, namespaces=NS) is not None
