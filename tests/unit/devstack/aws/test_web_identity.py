"""AssumeRoleWithWebIdentity's token, issuer, key, time and trust checks."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jwt
import pytest

from bridge.devstack import JwtAuthority
from bridge.devstack.aws import AwsStsEmulator
from tests.unit.devstack.aws.support import assume, error_of, mint_token, with_header
from tests.unit.devstack.fakes import ISSUER, NOW, SUB, FakeIdp


@pytest.mark.parametrize(
    "make_token",
    [
        lambda a: "not-a-jwt-at-all",
        lambda a: "e30.e30",
        lambda a: "!!!.###.$$$",
        lambda a: jwt.encode({"sub": SUB, "iss": ISSUER}, "", algorithm="none"),
        lambda a: jwt.encode({"sub": SUB, "iss": ISSUER}, "k" * 32, algorithm="HS256"),
        lambda a: with_header(mint_token(a), {"alg": "PS256", "kid": a.active_kid}),
    ],
    ids=["garbage", "two-segments", "bad-base64", "alg-none", "alg-hs256", "alg-ps256"],
)
def test_unacceptable_tokens_are_invalid_identity_token(
    sts: AwsStsEmulator, authority: JwtAuthority, make_token: Callable[[JwtAuthority], str]
) -> None:
    """Non-JWS tokens and algorithms outside RS/ES 256/384/512 are InvalidIdentityToken."""
    status, root = assume(sts, make_token(authority))
    assert (status, error_of(root)[1]) == (400, "InvalidIdentityToken")


def test_unregistered_issuer(sts: AwsStsEmulator, authority: JwtAuthority, idp: FakeIdp) -> None:
    """An iss with no registered provider is refused before any JWKS fetch."""
    status, root = assume(sts, mint_token(authority, iss="https://other.test"))
    _, code, message = error_of(root)
    assert (status, code) == (400, "InvalidIdentityToken")
    assert message == "No OpenIDConnect provider found in your account for https://other.test"
    assert idp.fetches == []


def test_unreachable_issuer(sts: AwsStsEmulator, authority: JwtAuthority, idp: FakeIdp) -> None:
    """A provider whose discovery cannot be fetched gives IDPCommunicationError 400."""
    idp.down = True
    status, root = assume(sts, mint_token(authority))
    assert (status, error_of(root)[1]) == (400, "IDPCommunicationError")


def test_jwks_cached_and_refetched_on_unknown_kid(
    sts: AwsStsEmulator, authority: JwtAuthority, idp: FakeIdp
) -> None:
    """Keys are fetched once, and again when a token names a kid not in the cache."""
    assert assume(sts, mint_token(authority))[0] == 200
    assert assume(sts, mint_token(authority))[0] == 200
    assert len(idp.fetches) == 2  # discovery + keys, once
    authority.rotate()
    assert assume(sts, mint_token(authority))[0] == 200
    assert len(idp.fetches) == 4


def test_unknown_kid_after_refetch_is_invalid(sts: AwsStsEmulator, authority: JwtAuthority) -> None:
    """A kid the issuer does not publish is InvalidIdentityToken."""
    token = authority.mint(SUB, ["sts.amazonaws.com"], 300, headers={"kid": "nope"})
    status, root = assume(sts, token)
    assert (status, error_of(root)[1]) == (400, "InvalidIdentityToken")


def test_float_exp_is_refused(sts: AwsStsEmulator, authority: JwtAuthority) -> None:
    """Non-integer timestamps are refused, as AWS does."""
    status, root = assume(sts, mint_token(authority, exp=NOW + 300.5))
    assert (status, error_of(root)[1]) == (400, "InvalidIdentityToken")


def test_missing_exp_is_refused(sts: AwsStsEmulator, authority: JwtAuthority) -> None:
    """A token without exp is InvalidIdentityToken."""
    token = authority.sign({"sub": SUB, "aud": ["sts.amazonaws.com"], "iss": ISSUER})
    status, root = assume(sts, token)
    assert (status, error_of(root)[1]) == (400, "InvalidIdentityToken")


def test_expired_token(sts: AwsStsEmulator, authority: JwtAuthority) -> None:
    """exp at or before now is ExpiredTokenException 400."""
    status, root = assume(sts, mint_token(authority, exp=NOW))
    assert (status, error_of(root)[1]) == (400, "ExpiredTokenException")


def test_string_audience_accepted(sts: AwsStsEmulator, authority: JwtAuthority) -> None:
    """aud may be a single string as well as a list."""
    assert assume(sts, mint_token(authority, aud="sts.amazonaws.com"))[0] == 200


@pytest.mark.parametrize(
    ("role_kwargs", "sub"),
    [
        ({"aud": None, "sub": "spiffe://example.org/ns/*"}, "spiffe://example.org/other"),
        ({"aud": None, "sub": "spiffe://example.org/ns/ap?"}, "spiffe://example.org/ns/apps"),
        ({"aud": "other-aud", "sub": None}, SUB),
    ],
    ids=["sub-glob", "sub-question-mark", "aud-condition"],
)
def test_trust_conditions(
    sts: AwsStsEmulator, authority: JwtAuthority, role_kwargs: dict[str, Any], sub: str
) -> None:
    """Unmet aud/sub trust conditions are AccessDenied 403."""
    arn = "arn:aws:iam::111122223333:role/strict"
    sts.add_role(arn, provider_url=ISSUER, **role_kwargs)
    token = authority.mint(sub, ["sts.amazonaws.com"], 300)
    status, root = assume(sts, token, RoleArn=arn)
    assert (status, error_of(root)[1:]) == (
        403,
        ("AccessDenied", "Not authorized to perform sts:AssumeRoleWithWebIdentity"),
    )


def test_exact_sub_condition_matches(sts: AwsStsEmulator, authority: JwtAuthority) -> None:
    """A sub without wildcards must match exactly, and then succeeds."""
    arn = "arn:aws:iam::111122223333:role/exact"
    sts.add_role(arn, provider_url=ISSUER, aud="sts.amazonaws.com", sub=SUB)
    assert assume(sts, mint_token(authority), RoleArn=arn)[0] == 200


def test_unknown_role_is_access_denied(sts: AwsStsEmulator, authority: JwtAuthority) -> None:
    """A role that does not exist is AccessDenied, like a failed trust policy."""
    status, root = assume(sts, mint_token(authority), RoleArn="arn:aws:iam::111122223333:role/x")
    assert (status, error_of(root)[1]) == (403, "AccessDenied")


def test_duration_above_role_max(sts: AwsStsEmulator, authority: JwtAuthority) -> None:
    """DurationSeconds above the role's MaxSessionDuration fails (no clamping)."""
    status, root = assume(sts, mint_token(authority), DurationSeconds="3601")
    _, code, message = error_of(root)
    assert (status, code) == (400, "ValidationError")
    assert "MaxSessionDuration" in message
