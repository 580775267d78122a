"""AwsStsEmulator.handle without sockets: wire format and AWS's validation rules."""

from __future__ import annotations

import email.utils
import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

import jwt
import pytest

from bridge.devstack._http import HttpRequest
from bridge.devstack.authority import JwtAuthority
from bridge.devstack.aws import STS_NAMESPACE, AwsStsEmulator
from bridge.devstack.faults import HttpFailure

ISSUER = "https://issuer.test"
ROLE = "arn:aws:iam::111122223333:role/path/demo"
SUB = "spiffe://example.org/ns/app"
NOW = 1_800_000_000
NS = {"sts": STS_NAMESPACE}


class FakeIdp:
    """Serves discovery + JWKS documents from memory and counts fetches."""

    def __init__(self, authority: JwtAuthority) -> None:
        self.authority = authority
        self.fetches: list[str] = []
        self.down = False

    def __call__(self, url: str, timeout: float) -> Any:
        self.fetches.append(url)
        if self.down:
            raise ConnectionRefusedError("down")
        if url == ISSUER + "/.well-known/openid-configuration":
            return {"issuer": ISSUER, "jwks_uri": ISSUER + "/keys"}
        if url == ISSUER + "/keys":
            return self.authority.jwks()
        raise OSError(f"404 {url}")


@pytest.fixture
def authority() -> JwtAuthority:
    return JwtAuthority("example.org", issuer=ISSUER, clock=lambda: NOW)


@pytest.fixture
def idp(authority: JwtAuthority) -> FakeIdp:
    return FakeIdp(authority)


@pytest.fixture
def sts(idp: FakeIdp) -> AwsStsEmulator:
    emulator = AwsStsEmulator(clock=lambda: NOW + 0.5, fetch=idp)
    emulator.register_oidc_provider(ISSUER, ["sts.amazonaws.com"])
    emulator.add_role(
        ROLE, provider_url=ISSUER, aud="sts.amazonaws.com", sub="spiffe://example.org/ns/*"
    )
    return emulator


def _token(authority: JwtAuthority, **overrides: Any) -> str:
    return authority.mint(SUB, ["sts.amazonaws.com"], 300, extra_claims=overrides or None)


def _with_header(token: str, header: dict[str, str]) -> str:
    """The same claims and signature under another header (e.g. a lying alg)."""
    encoded = jwt.utils.base64url_encode(json.dumps(header).encode()).decode()
    return ".".join([encoded, *token.split(".")[1:]])


def _call(sts: AwsStsEmulator, **params: str) -> tuple[int, ET.Element, dict[str, str]]:
    form = {"Action": "AssumeRoleWithWebIdentity", "Version": "2011-06-15", **params}
    request = HttpRequest(
        method="POST",
        path="/",
        query="",
        headers={"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"},
        body=urlencode(form).encode(),
    )
    response = sts.handle(request)
    return response.status, ET.fromstring(response.body), dict(response.headers)


def _assume(sts: AwsStsEmulator, token: str, **params: str) -> tuple[int, ET.Element]:
    base = {"RoleArn": ROLE, "RoleSessionName": "app", "WebIdentityToken": token}
    status, root, _ = _call(sts, **{**base, **params})
    return status, root


def _error(root: ET.Element) -> tuple[str, str, str]:
    return (
        root.findtext("sts:Error/sts:Type", namespaces=NS) or "",
        root.findtext("sts:Error/sts:Code", namespaces=NS) or "",
        root.findtext("sts:Error/sts:Message", namespaces=NS) or "",
    )


def test_success_document_shape(sts: AwsStsEmulator, authority: JwtAuthority) -> None:
    """A valid token yields the namespaced AssumeRoleWithWebIdentityResponse AWS sends."""
    status, root = _assume(sts, _token(authority), DurationSeconds="1800")
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
    _assume(sts, _token(authority))
    (issued,) = sts.issued
    assert issued.session_name == "app"
    assert issued.subject == SUB
    assert issued.secret_access_key not in repr(issued)
    assert issued.session_token not in repr(issued)


def test_date_header_follows_injected_clock(sts: AwsStsEmulator, authority: JwtAuthority) -> None:
    """The Date header comes from the emulator's clock, so tests can play skew."""
    _, _, headers = _call(
        sts, RoleArn=ROLE, RoleSessionName="app", WebIdentityToken=_token(authority)
    )
    assert email.utils.parsedate_to_datetime(headers["Date"]).timestamp() == NOW
    assert headers["Content-Type"] == "text/xml"
    assert headers["x-amzn-RequestId"]


def test_error_document_shape(sts: AwsStsEmulator) -> None:
    """Errors are namespaced ErrorResponse documents with Type, Code, Message, RequestId."""
    status, root = _assume(sts, "abcd.efgh.ijkl")
    assert status == 400
    assert root.tag == f"{{{STS_NAMESPACE}}}ErrorResponse"
    assert _error(root)[:2] == ("Sender", "InvalidIdentityToken")
    assert root.findtext("sts:RequestId", namespaces=NS)


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
    base = {"RoleArn": ROLE, "RoleSessionName": "app", "WebIdentityToken": _token(authority)}
    status, root, _ = _call(sts, **{**base, **params})
    _, code, message = _error(root)
    assert (status, code) == (400, "ValidationError")
    assert fragment in message


def test_missing_parameter_is_validation_error(sts: AwsStsEmulator) -> None:
    """A missing required parameter reads 'Member must not be null'."""
    status, root, _ = _call(sts, RoleArn=ROLE, RoleSessionName="app")
    assert status == 400
    assert "must not be null" in _error(root)[2]


def test_malformed_policy_document(sts: AwsStsEmulator, authority: JwtAuthority) -> None:
    """A session policy that is not JSON is MalformedPolicyDocument."""
    status, root = _assume(sts, _token(authority), Policy="{not json")
    assert (status, _error(root)[1]) == (400, "MalformedPolicyDocument")


def test_policy_adds_packed_policy_size(sts: AwsStsEmulator, authority: JwtAuthority) -> None:
    """With a Policy, the result reports PackedPolicySize."""
    policy = json.dumps({"Version": "2012-10-17", "Statement": []})
    status, root = _assume(sts, _token(authority), Policy=policy)
    assert status == 200
    path = "sts:AssumeRoleWithWebIdentityResult/sts:PackedPolicySize"
    assert root.findtext(path, namespaces=NS) is not None


@pytest.mark.parametrize(
    "make_token",
    [
        lambda a: "not-a-jwt-at-all",
        lambda a: "e30.e30",
        lambda a: "!!!.###.$$$",
        lambda a: jwt.encode({"sub": SUB, "iss": ISSUER}, "", algorithm="none"),
        lambda a: jwt.encode({"sub": SUB, "iss": ISSUER}, "k" * 32, algorithm="HS256"),
        lambda a: _with_header(_token(a), {"alg": "PS256", "kid": a.active_kid}),
    ],
    ids=["garbage", "two-segments", "bad-base64", "alg-none", "alg-hs256", "alg-ps256"],
)
def test_unacceptable_tokens_are_invalid_identity_token(
    sts: AwsStsEmulator, authority: JwtAuthority, make_token: Callable[[JwtAuthority], str]
) -> None:
    """Non-JWS tokens and algorithms outside RS/ES 256/384/512 are InvalidIdentityToken."""
    status, root = _assume(sts, make_token(authority))
    assert (status, _error(root)[1]) == (400, "InvalidIdentityToken")


def test_unregistered_issuer(sts: AwsStsEmulator, authority: JwtAuthority, idp: FakeIdp) -> None:
    """An iss with no registered provider is refused before any JWKS fetch."""
    status, root = _assume(sts, _token(authority, iss="https://other.test"))
    _, code, message = _error(root)
    assert (status, code) == (400, "InvalidIdentityToken")
    assert message == "No OpenIDConnect provider found in your account for https://other.test"
    assert idp.fetches == []


def test_unreachable_issuer(sts: AwsStsEmulator, authority: JwtAuthority, idp: FakeIdp) -> None:
    """A provider whose discovery cannot be fetched gives IDPCommunicationError 400."""
    idp.down = True
    status, root = _assume(sts, _token(authority))
    assert (status, _error(root)[1]) == (400, "IDPCommunicationError")


def test_jwks_cached_and_refetched_on_unknown_kid(
    sts: AwsStsEmulator, authority: JwtAuthority, idp: FakeIdp
) -> None:
    """Keys are fetched once, and again when a token names a kid not in the cache."""
    assert _assume(sts, _token(authority))[0] == 200
    assert _assume(sts, _token(authority))[0] == 200
    assert len(idp.fetches) == 2  # discovery + keys, once
    authority.rotate()
    assert _assume(sts, _token(authority))[0] == 200
    assert len(idp.fetches) == 4


def test_unknown_kid_after_refetch_is_invalid(sts: AwsStsEmulator, authority: JwtAuthority) -> None:
    """A kid the issuer does not publish is InvalidIdentityToken."""
    token = authority.mint(SUB, ["sts.amazonaws.com"], 300, headers={"kid": "nope"})
    status, root = _assume(sts, token)
    assert (status, _error(root)[1]) == (400, "InvalidIdentityToken")


def test_float_exp_is_refused(sts: AwsStsEmulator, authority: JwtAuthority) -> None:
    """Non-integer timestamps are refused, as AWS does."""
    status, root = _assume(sts, _token(authority, exp=NOW + 300.5))
    assert (status, _error(root)[1]) == (400, "InvalidIdentityToken")


def test_missing_exp_is_refused(sts: AwsStsEmulator, authority: JwtAuthority) -> None:
    """A token without exp is InvalidIdentityToken."""
    token = authority.sign({"sub": SUB, "aud": ["sts.amazonaws.com"], "iss": ISSUER})
    status, root = _assume(sts, token)
    assert (status, _error(root)[1]) == (400, "InvalidIdentityToken")


def test_expired_token(sts: AwsStsEmulator, authority: JwtAuthority) -> None:
    """exp at or before now is ExpiredTokenException 400."""
    status, root = _assume(sts, _token(authority, exp=NOW))
    assert (status, _error(root)[1]) == (400, "ExpiredTokenException")


def test_string_audience_accepted(sts: AwsStsEmulator, authority: JwtAuthority) -> None:
    """aud may be a single string as well as a list."""
    assert _assume(sts, _token(authority, aud="sts.amazonaws.com"))[0] == 200


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
    status, root = _assume(sts, token, RoleArn=arn)
    assert (status, _error(root)[1:]) == (
        403,
        ("AccessDenied", "Not authorized to perform sts:AssumeRoleWithWebIdentity"),
    )


def test_exact_sub_condition_matches(sts: AwsStsEmulator, authority: JwtAuthority) -> None:
    """A sub without wildcards must match exactly, and then succeeds."""
    arn = "arn:aws:iam::111122223333:role/exact"
    sts.add_role(arn, provider_url=ISSUER, aud="sts.amazonaws.com", sub=SUB)
    assert _assume(sts, _token(authority), RoleArn=arn)[0] == 200


def test_unknown_role_is_access_denied(sts: AwsStsEmulator, authority: JwtAuthority) -> None:
    """A role that does not exist is AccessDenied, like a failed trust policy."""
    status, root = _assume(sts, _token(authority), RoleArn="arn:aws:iam::111122223333:role/x")
    assert (status, _error(root)[1]) == (403, "AccessDenied")


def test_duration_above_role_max(sts: AwsStsEmulator, authority: JwtAuthority) -> None:
    """DurationSeconds above the role's MaxSessionDuration fails (no clamping)."""
    status, root = _assume(sts, _token(authority), DurationSeconds="3601")
    _, code, message = _error(root)
    assert (status, code) == (400, "ValidationError")
    assert "MaxSessionDuration" in message


def test_add_role_validates_inputs(sts: AwsStsEmulator) -> None:
    """add_role refuses malformed ARNs and out-of-range maximum durations."""
    with pytest.raises(ValueError, match="ARN"):
        sts.add_role("role/demo", provider_url=ISSUER, aud=None, sub=None)
    with pytest.raises(ValueError, match="within 3600"):
        sts.add_role(ROLE, provider_url=ISSUER, aud=None, sub=None, max_session_duration=60)


def test_register_provider_needs_client_ids(sts: AwsStsEmulator) -> None:
    """An OIDC provider needs at least one client ID."""
    with pytest.raises(ValueError, match="client_ids"):
        sts.register_oidc_provider(ISSUER, [])


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
    got_status, root = _assume(sts, _token(authority))
    got_kind, code, got_message = _error(root)
    assert (got_status, got_kind, code) == (status, kind, failure.code)
    assert message in got_message
    assert _assume(sts, _token(authority))[0] == 200


def test_requests_are_recorded(sts: AwsStsEmulator, authority: JwtAuthority) -> None:
    """Every request is recorded with its action, form parameters and headers."""
    token = _token(authority)
    _assume(sts, token)
    (recorded,) = sts.requests
    assert recorded.action == "AssumeRoleWithWebIdentity"
    assert recorded.params["WebIdentityToken"] == token
    assert "Content-Type" in recorded.headers
    assert token not in repr(recorded)
    sts.clear_requests()
    assert sts.requests == ()


def test_unknown_action_and_version(sts: AwsStsEmulator) -> None:
    """Unsupported actions (GetSessionToken) and versions are InvalidAction."""
    status, root, _ = _call(sts, Action="GetSessionToken")
    assert (status, _error(root)[1]) == (400, "InvalidAction")
    status, root, _ = _call(sts, Version="2010-01-01")
    assert (status, _error(root)[1]) == (400, "InvalidAction")


def test_query_string_requests_work(sts: AwsStsEmulator, authority: JwtAuthority) -> None:
    """GET with the parameters in the query string is accepted, as AWS does."""
    query = urlencode(
        {
            "Action": "AssumeRoleWithWebIdentity",
            "Version": "2011-06-15",
            "RoleArn": ROLE,
            "RoleSessionName": "app",
            "WebIdentityToken": _token(authority),
        }
    )
    response = sts.handle(HttpRequest("GET", "/", query, {}))
    assert response.status == 200


def test_other_paths_are_not_found(sts: AwsStsEmulator) -> None:
    """Only / is served."""
    assert sts.handle(HttpRequest("GET", "/favicon.ico", "", {})).status == 404
