"""The wire: document shapes, the Date header, faults, routing, recording."""

from __future__ import annotations

import email.utils
import re
from urllib.parse import urlencode

import pytest

from bridge.devstack import HttpFailure, HttpRequest, JwtAuthority
from bridge.devstack.aws import STS_NAMESPACE, AwsStsEmulator
from tests.unit.devstack.aws.support import NS, ROLE, assume, call_sts, error_of, mint_token
from tests.unit.devstack.fakes import ISSUER, NOW, SUB


def test_success_document_shape(sts: AwsStsEmulator, authority: JwtAuthority) -> None:
    """A valid token yields the namespaced AssumeRoleWithWebIdentityResponse AWS sends."""
    status, root = assume(sts, mint_token(authority), DurationSeconds="1800")
    assert status == 200
    assert root.tag == f"{{{STS_NAMESPACE}}}AssumeRoleWithWebIdentityResponse"
    result = root.find("sts:AssumeRoleWithWebIdentityResult", NS)
    assert result is not None
    assert [child.tag.split("}")[1] for child in result] == [
        "Credentials",
        "SubjectFromWebIdentityToken",
        "AssumedRoleUser",
        "Audience",
        "Provider",
    ]
    creds = result.find("sts:Credentials", NS)
    assert creds is not None
    access_key = creds.findtext("sts:AccessKeyId", namespaces=NS) or ""
    assert re.fullmatch(r"ASIA[A-Z0-9]{16}", access_key)
    assert len(creds.findtext("sts:SecretAccessKey", namespaces=NS) or "") == 40
    assert len(creds.findtext("sts:SessionToken", namespaces=NS) or "") > 100
    assert creds.findtext("sts:Expiration", namespaces=NS) == "2027-01-15T08:30:00Z"
    assert result.findtext("sts:SubjectFromWebIdentityToken", namespaces=NS) == SUB
    assert result.findtext("sts:AssumedRoleUser/sts:Arn", namespaces=NS) == (
        "arn:aws:sts::111122223333:assumed-role/demo/app"
    )
    role_id = result.findtext("sts:AssumedRoleUser/sts:AssumedRoleId", namespaces=NS) or ""
    assert role_id.startswith("AROA")
    assert role_id.endswith(":app")
    assert result.findtext("sts:Audience", namespaces=NS) == "sts.amazonaws.com"
    assert result.findtext("sts:Provider", namespaces=NS) == ISSUER
    assert root.findtext("sts:ResponseMetadata/sts:RequestId", namespaces=NS)


def test_issued_credentials_recorded_without_secrets_in_repr(
    sts: AwsStsEmulator, authority: JwtAuthority
) -> None:
    """issued keeps the handed-out credentials; repr hides secret and session token."""
    assume(sts, mint_token(authority))
    (issued,) = sts.issued
    assert issued.session_name == "app"
    assert issued.subject == SUB
    assert issued.secret_access_key not in repr(issued)
    assert issued.session_token not in repr(issued)


def test_date_header_follows_injected_clock(sts: AwsStsEmulator, authority: JwtAuthority) -> None:
    """The Date header comes from the emulator's clock, so tests can play skew."""
    _, _, headers = call_sts(
        sts, RoleArn=ROLE, RoleSessionName="app", WebIdentityToken=mint_token(authority)
    )
    assert email.utils.parsedate_to_datetime(headers["Date"]).timestamp() == NOW
    assert headers["Content-Type"] == "text/xml"
    assert headers["x-amzn-RequestId"]


def test_error_document_shape(sts: AwsStsEmulator) -> None:
    """Errors are namespaced ErrorResponse documents with Type, Code, Message, RequestId."""
    status, root = assume(sts, "abcd.efgh.ijkl")
    assert status == 400
    assert root.tag == f"{{{STS_NAMESPACE}}}ErrorResponse"
    assert error_of(root)[:2] == ("Sender", "InvalidIdentityToken")
    assert root.findtext("sts:RequestId", namespaces=NS)


@pytest.mark.parametrize(
    ("failure", "status", "kind", "message"),
    [
        (HttpFailure(503, "ServiceUnavailable"), 503, "Receiver", "unavailable"),
        (HttpFailure(0, "Throttling"), 400, "Sender", "Rate exceeded"),
        (HttpFailure(400, "IDPCommunicationError", "custom"), 400, "Sender", "custom"),
    ],
    ids=["503", "throttling-default-status", "custom-message"],
)
def test_fault_switch_replies(
    sts: AwsStsEmulator,
    authority: JwtAuthority,
    failure: HttpFailure,
    status: int,
    kind: str,
    message: str,
) -> None:
    """Queued faults answer with the given status and code, then the next call succeeds."""
    sts.faults.fail_next("AssumeRoleWithWebIdentity", failure)
    got_status, root = assume(sts, mint_token(authority))
    got_kind, code, got_message = error_of(root)
    assert (got_status, got_kind, code) == (status, kind, failure.code)
    assert message in got_message
    assert assume(sts, mint_token(authority))[0] == 200


def test_requests_are_recorded(sts: AwsStsEmulator, authority: JwtAuthority) -> None:
    """Every request is recorded with its action, form parameters and headers."""
    token = mint_token(authority)
    assume(sts, token)
    (recorded,) = sts.requests
    assert recorded.action == "AssumeRoleWithWebIdentity"
    assert recorded.params["WebIdentityToken"] == token
    assert "Content-Type" in recorded.headers
    assert token not in repr(recorded)
    sts.clear_requests()
    assert sts.requests == ()


def test_unknown_action_and_version(sts: AwsStsEmulator) -> None:
    """Unsupported actions (GetSessionToken) and versions are InvalidAction."""
    status, root, _ = call_sts(sts, Action="GetSessionToken")
    assert (status, error_of(root)[1]) == (400, "InvalidAction")
    status, root, _ = call_sts(sts, Version="2010-01-01")
    assert (status, error_of(root)[1]) == (400, "InvalidAction")


def test_query_string_requests_work(sts: AwsStsEmulator, authority: JwtAuthority) -> None:
    """GET with the parameters in the query string is accepted, as AWS does."""
    query = urlencode(
        {
            "Action": "AssumeRoleWithWebIdentity",
            "Version": "2011-06-15",
            "RoleArn": ROLE,
            "RoleSessionName": "app",
            "WebIdentityToken": mint_token(authority),
        }
    )
    response = sts.handle(HttpRequest("GET", "/", query, {}))
    assert response.status == 200


def test_other_paths_are_not_found(sts: AwsStsEmulator) -> None:
    """Only / is served."""
    assert sts.handle(HttpRequest("GET", "/favicon.ico", "", {})).status == 404
