"""The wire: fault switches on both APIs, and request recording."""

from __future__ import annotations

import pytest

from bridge.devstack import HttpFailure, JwtAuthority
from bridge.devstack.gcp import GcpEmulator
from tests.unit.devstack.gcp.support import (
    call_iam,
    exchange,
    federated_token,
    iam_error,
    mint_svid,
)


@pytest.mark.parametrize(
    ("failure", "status", "error"),
    [
        (HttpFailure(0, "temporarily_unavailable"), 503, "temporarily_unavailable"),
        (HttpFailure(429, "rate_limit_exceeded", "slow down"), 429, "rate_limit_exceeded"),
    ],
    ids=["503", "429"],
)
def test_sts_faults(
    gcp: GcpEmulator, authority: JwtAuthority, failure: HttpFailure, status: int, error: str
) -> None:
    """A queued STS fault answers in RFC 6749 shape once; the next call succeeds."""
    gcp.faults.fail_next("token", failure)
    got_status, document = exchange(gcp, mint_svid(authority))
    assert (got_status, document["error"]) == (status, error)
    assert document["error_description"]
    assert exchange(gcp, mint_svid(authority))[0] == 200


@pytest.mark.parametrize(
    ("operation", "failure", "status"),
    [
        ("generateAccessToken", HttpFailure(0, "UNAVAILABLE"), 503),
        ("generateAccessToken", HttpFailure(0, "RESOURCE_EXHAUSTED"), 429),
        ("generateIdToken", HttpFailure(503, "UNAVAILABLE", "down"), 503),
    ],
    ids=["access-503", "access-429", "id-503"],
)
def test_iam_faults(
    gcp: GcpEmulator,
    authority: JwtAuthority,
    operation: str,
    failure: HttpFailure,
    status: int,
) -> None:
    """A queued IAM fault answers in Google's JSON error shape once."""
    bearer = federated_token(gcp, authority)
    body = {"scope": ["s"], "audience": "a"}
    gcp.faults.fail_next(operation, failure)
    got_status, document = call_iam(gcp, bearer, body, method=operation)
    code, state, message = iam_error(document)
    assert (got_status, code, state) == (status, status, failure.code)
    assert message
    assert call_iam(gcp, bearer, body, method=operation)[0] == 200


def test_requests_recorded(gcp: GcpEmulator, authority: JwtAuthority) -> None:
    """Requests are recorded with operation, form or JSON body and headers; repr hides them."""
    svid = mint_svid(authority)
    bearer = exchange(gcp, svid)[1]["access_token"]
    call_iam(gcp, bearer, {"scope": ["s"], "lifetime": "60s"})
    token_request, iam_request = gcp.requests
    assert (token_request.operation, token_request.method) == ("token", "POST")
    assert token_request.form["subject_token"] == svid
    assert iam_request.operation == "generateAccessToken"
    assert iam_request.json_body == {"scope": ["s"], "lifetime": "60s"}
    assert iam_request.headers["authorization"] == f"Bearer {bearer}"
    assert svid not in repr(token_request)
    assert bearer not in repr(iam_request)
    gcp.clear_requests()
    assert gcp.requests == ()
