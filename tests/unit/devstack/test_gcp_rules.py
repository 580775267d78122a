"""GcpEmulator.handle without sockets: Google's STS and IAM Credentials rules."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import quote, urlencode

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from google.auth import aws
from jwt.algorithms import RSAAlgorithm

from bridge.devstack._http import HttpRequest
from bridge.devstack.authority import JwtAuthority
from bridge.devstack.faults import HttpFailure
from bridge.devstack.gcp import (
    ACCESS_TOKEN_TYPE,
    AWS_TOKEN_TYPE,
    CONDITION_REJECTED,
    IAM_SCOPE,
    JWT_TOKEN_TYPE,
    SUBJECT_TOO_LONG,
    TOKEN_EXCHANGE_GRANT,
    GcpEmulator,
    federated_principal,
    pool_principal_set,
)

ISSUER = "https://issuer.test"
POOL = "projects/123456/locations/global/workloadIdentityPools/spire"
PROVIDER = f"//iam.googleapis.com/{POOL}/providers/spire"
AWS_PROVIDER = (
    "//iam.googleapis.com/projects/123456/locations/global/workloadIdentityPools/aws-pool/"
    "providers/aws-prov"
)
SUB = "spiffe://example.org/ns/app"
SA = "app@proj.iam.gserviceaccount.com"
NOW = 1_800_000_000
PORT = 9  # never bound: the emulator is only called through handle()
PERMISSION_DENIED = (
    "Permission 'iam.serviceAccounts.getAccessToken' denied on resource (or it may not exist)."
)


class FakeIdp:
    """Serves discovery + JWKS documents from memory and counts fetches."""

    def __init__(self, authority: JwtAuthority) -> None:
        self.authority = authority
        self.fetches: list[str] = []

    def __call__(self, url: str, timeout: float) -> Any:
        self.fetches.append(url)
        if url == ISSUER + "/.well-known/openid-configuration":
            return {"issuer": ISSUER, "jwks_uri": ISSUER + "/keys"}
        if url == ISSUER + "/keys":
            return self.authority.jwks()
        raise OSError(f"404 {url}")


class FakeAws:
    """Plays AWS STS for replayed GetCallerIdentity requests; records what it got."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, str]]] = []
        self.reply: tuple[int, bytes] = (200, _caller_identity("111122223333"))
        self.down = False

    def __call__(
        self, url: str, headers: Mapping[str, str], body: bytes, timeout: float
    ) -> tuple[int, bytes]:
        self.calls.append((url, dict(headers)))
        if self.down:
            raise ConnectionRefusedError("down")
        return self.reply


def _caller_identity(account: str) -> bytes:
    return (
        '<GetCallerIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">'
        f"<GetCallerIdentityResult><Arn>arn:aws:sts::{account}:assumed-role/app/s1</Arn>"
        f"<UserId>AROAEXAMPLE:s1</UserId><Account>{account}</Account>"
        "</GetCallerIdentityResult></GetCallerIdentityResponse>"
    ).encode()


@pytest.fixture
def authority() -> JwtAuthority:
    return JwtAuthority("example.org", issuer=ISSUER, clock=lambda: NOW)


@pytest.fixture
def idp(authority: JwtAuthority) -> FakeIdp:
    return FakeIdp(authority)


@pytest.fixture
def fake_aws() -> FakeAws:
    return FakeAws()


@pytest.fixture
def clock() -> list[float]:
    return [NOW + 0.5]


@pytest.fixture
def gcp(idp: FakeIdp, fake_aws: FakeAws, clock: list[float]) -> GcpEmulator:
    emulator = GcpEmulator(port=PORT, clock=lambda: clock[0], fetch=idp, replay=fake_aws)
    emulator.add_oidc_provider(
        PROVIDER,
        issuer_uri=ISSUER,
        allowed_audiences=[PROVIDER],
        attribute_condition="spiffe://example.org/*",
    )
    emulator.add_service_account(SA, workload_identity_users=[pool_principal_set(PROVIDER)])
    return emulator


def _svid(authority: JwtAuthority, sub: str = SUB, **overrides: Any) -> str:
    return authority.mint(sub, [PROVIDER], 300, extra_claims=overrides or None)


def _exchange(gcp: GcpEmulator, token: str, **overrides: str) -> tuple[int, dict[str, Any]]:
    form = {
        "grant_type": TOKEN_EXCHANGE_GRANT,
        "audience": PROVIDER,
        "scope": IAM_SCOPE,
        "requested_token_type": ACCESS_TOKEN_TYPE,
        "subject_token": token,
        "subject_token_type": JWT_TOKEN_TYPE,
        **overrides,
    }
    request = HttpRequest(
        method="POST",
        path="/v1/token",
        query="",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        body=urlencode(form).encode(),
    )
    response = gcp.handle(request)
    return response.status, json.loads(response.body)


def _federated(gcp: GcpEmulator, authority: JwtAuthority, **overrides: str) -> str:
    status, document = _exchange(gcp, _svid(authority), **overrides)
    assert status == 200, document
    return str(document["access_token"])


def _iam(
    gcp: GcpEmulator,
    bearer: str | None,
    body: Mapping[str, Any] | None = None,
    *,
    account: str = SA,
    method: str = "generateAccessToken",
    project: str = "-",
) -> tuple[int, dict[str, Any]]:
    if body is None:
        body = {"scope": ["https://www.googleapis.com/auth/cloud-platform"]}
    headers = {"Content-Type": "application/json"}
    if bearer is not None:
        headers["authorization"] = f"Bearer {bearer}"  # google-auth writes it lower-case
    request = HttpRequest(
        method="POST",
        path=f"/v1/projects/{project}/serviceAccounts/{account}:{method}",
        query="",
        headers=headers,
        body=json.dumps(body).encode(),
    )
    response = gcp.handle(request)
    return response.status, json.loads(response.body)


def _iam_error(document: Mapping[str, Any]) -> tuple[int, str, str]:
    error = document["error"]
    return error["code"], error["status"], error["message"]


def _signed_aws_token(audience: str = AWS_PROVIDER, region: str = "us-east-1") -> str:
    """The subject token google-auth itself builds (offline: signing needs no network)."""

    class Supplier(aws.AwsSecurityCredentialsSupplier):
        def get_aws_security_credentials(self, context: Any, request: Any) -> Any:
            return aws.AwsSecurityCredentials("ASIAEXAMPLE", "secret", "session-token")

        def get_aws_region(self, context: Any, request: Any) -> str:
            return region

    credentials = aws.Credentials(
        audience=audience,
        subject_token_type=AWS_TOKEN_TYPE,
        token_url="http://127.0.0.1:9/v1/token",
        aws_security_credentials_supplier=Supplier(),
    )
    return str(credentials.retrieve_subject_token(None))


# -- token exchange: success and request rules --------------------------------------------


def test_exchange_success_shape(gcp: GcpEmulator, authority: JwtAuthority) -> None:
    """A valid SVID yields Google's STS response and a token whoami maps to the principal."""
    status, document = _exchange(gcp, _svid(authority))
    assert status == 200
    assert set(document) == {"access_token", "issued_token_type", "token_type", "expires_in"}
    assert document["access_token"].startswith("ya29.dev-")
    assert document["issued_token_type"] == ACCESS_TOKEN_TYPE
    assert (document["token_type"], document["expires_in"]) == ("Bearer", 3600)
    grant = gcp.whoami(document["access_token"])
    assert grant is not None
    assert grant.principal == f"principal://iam.googleapis.com/{POOL}/subject/{SUB}"
    assert grant.principal == federated_principal(PROVIDER, SUB)
    assert (grant.provider, grant.subject, grant.scopes) == (PROVIDER, SUB, (IAM_SCOPE,))
    assert document["access_token"] not in repr(grant)


@pytest.mark.parametrize(
    ("overrides", "error"),
    [
        ({"grant_type": "client_credentials"}, "unsupported_grant_type"),
        ({"requested_token_type": JWT_TOKEN_TYPE}, "invalid_request"),
        ({"subject_token_type": "urn:ietf:params:oauth:token-type:saml2"}, "invalid_request"),
        ({"subject_token": ""}, "invalid_request"),
        ({"audience": "projects/123456/providers/spire"}, "invalid_request"),
        ({"audience": PROVIDER.replace("/spire/providers", "/sp/providers")}, "invalid_request"),
        ({"options": "{not json"}, "invalid_request"),
        ({"options": json.dumps({"userProject": "p" * 33})}, "invalid_request"),
    ],
    ids=[
        "grant-type",
        "requested-type",
        "subject-type",
        "no-token",
        "audience-shape",
        "pool-id-short",
        "options-json",
        "user-project",
    ],
)
def test_request_rules(
    gcp: GcpEmulator, authority: JwtAuthority, overrides: dict[str, str], error: str
) -> None:
    """Malformed exchange requests are RFC 6749 errors with HTTP 400."""
    status, document = _exchange(gcp, _svid(authority), **overrides)
    assert (status, document["error"]) == (400, error)
    assert document["error_description"]


def test_unknown_and_disabled_provider(gcp: GcpEmulator, authority: JwtAuthority) -> None:
    """A provider that does not exist, or is disabled, is invalid_target."""
    other = PROVIDER.replace("providers/spire", "providers/other")
    assert _exchange(gcp, _svid(authority), audience=other)[1]["error"] == "invalid_target"
    gcp.set_provider_enabled(PROVIDER, False)
    status, document = _exchange(gcp, _svid(authority))
    assert (status, document["error"]) == (400, "invalid_target")
    gcp.set_provider_enabled(PROVIDER, True)
    assert _exchange(gcp, _svid(authority))[0] == 200


# -- token exchange: subject token validation ----------------------------------------------


def _es384_token() -> str:
    key = ec.generate_private_key(ec.SECP384R1())
    claims = {"sub": SUB, "aud": [PROVIDER], "iss": ISSUER, "iat": NOW, "exp": NOW + 300}
    return jwt.encode(claims, key, algorithm="ES384", headers={"kid": "p384"})


@pytest.mark.parametrize(
    ("make_token", "fragment"),
    [
        (lambda a: a.mint(SUB, ["other"], 300), "The audience in ID Token"),
        (lambda a: _svid(a, iss="https://other.test"), "does not match the expected ISSUER"),
        (lambda a: a.mint(SUB, [PROVIDER], 300, iat=NOW - 600), "expired"),
        (lambda a: a.mint(SUB, [PROVIDER], 300, iat=NOW + 120), "future"),
        (lambda a: a.mint(SUB, [PROVIDER], 48 * 3600, iat=NOW - 10), "48 hours"),
        (lambda a: a.sign({"aud": [PROVIDER], "iss": ISSUER, "iat": NOW, "exp": NOW + 60}), "sub"),
        (lambda a: a.sign({"sub": SUB, "aud": [PROVIDER], "iss": ISSUER, "exp": NOW + 60}), "iat"),
        (lambda a: _without_kid(_svid(a)), "kid"),
        (lambda a: _es384_token(), "ES384"),
        (lambda a: a.impostor().mint(SUB, [PROVIDER], 300), "signature"),
        (lambda a: a.mint(SUB, [PROVIDER], 300, headers={"kid": "nope"}), "kid"),
        (lambda a: "not.a-jwt", "parse"),
    ],
    ids=[
        "wrong-aud",
        "wrong-iss",
        "expired",
        "iat-future",
        "lifetime-48h",
        "no-sub",
        "no-iat",
        "no-kid",
        "es384",
        "foreign-key",
        "unknown-kid",
        "garbage",
    ],
)
def test_subject_token_refusals(
    gcp: GcpEmulator,
    authority: JwtAuthority,
    make_token: Callable[[JwtAuthority], str],
    fragment: str,
) -> None:
    """Tokens Google would refuse are invalid_grant 400 with a telling description."""
    status, document = _exchange(gcp, make_token(authority))
    assert (status, document["error"]) == (400, "invalid_grant")
    assert fragment in document["error_description"]


def _without_kid(token: str) -> str:
    """The same claims and signature under a header without `kid`."""
    header = jwt.utils.base64url_encode(json.dumps({"alg": "ES256", "typ": "JWT"}).encode())
    return ".".join([header.decode(), *token.split(".")[1:]])


def test_iat_within_leeway_is_accepted(gcp: GcpEmulator, authority: JwtAuthority) -> None:
    """An iat up to a minute ahead of Google's clock is tolerated."""
    assert _exchange(gcp, authority.mint(SUB, [PROVIDER], 300, iat=NOW + 30))[0] == 200


def test_default_audiences_are_the_resource_name(gcp: GcpEmulator, authority: JwtAuthority) -> None:
    """With no allowed audiences, aud must be the provider name, with or without https:."""
    gcp.add_oidc_provider(PROVIDER, issuer_uri=ISSUER)
    assert _exchange(gcp, authority.mint(SUB, [PROVIDER], 300))[0] == 200
    assert _exchange(gcp, authority.mint(SUB, ["https:" + PROVIDER], 300))[0] == 200
    status, document = _exchange(gcp, authority.mint(SUB, ["sts.amazonaws.com"], 300))
    assert (status, document["error"]) == (400, "invalid_grant")


def test_subject_byte_limit(gcp: GcpEmulator, authority: JwtAuthority) -> None:
    """google.subject (sub) may be 127 bytes; 128 is invalid_grant with Google's text."""
    prefix = "spiffe://example.org/"
    fits = prefix + "a" * (127 - len(prefix))
    assert _exchange(gcp, _svid(authority, sub=fits))[0] == 200
    status, document = _exchange(gcp, _svid(authority, sub=fits + "a"))
    assert (status, document) == (
        400,
        {"error": "invalid_grant", "error_description": SUBJECT_TOO_LONG},
    )


def test_attribute_condition_glob(gcp: GcpEmulator, authority: JwtAuthority) -> None:
    """A sub outside the condition's glob is unauthorized_client with Google's text."""
    status, document = _exchange(gcp, _svid(authority, sub="spiffe://evil.org/app"))
    assert (status, document) == (
        400,
        {"error": "unauthorized_client", "error_description": CONDITION_REJECTED},
    )


def test_attribute_condition_callable(gcp: GcpEmulator, authority: JwtAuthority) -> None:
    """A callable condition sees the verified claims."""
    seen: list[Mapping[str, Any]] = []

    def condition(claims: Mapping[str, Any]) -> bool:
        seen.append(claims)
        return claims.get("team") == "blue"

    gcp.add_oidc_provider(
        PROVIDER, issuer_uri=ISSUER, allowed_audiences=[PROVIDER], attribute_condition=condition
    )
    assert _exchange(gcp, _svid(authority, team="red"))[1]["error"] == "unauthorized_client"
    assert _exchange(gcp, _svid(authority, team="blue"))[0] == 200
    assert seen[-1]["sub"] == SUB


def test_uploaded_rs256_jwks(gcp: GcpEmulator, idp: FakeIdp) -> None:
    """An RS256 token verifies against an uploaded JWKS without any discovery fetch."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = {**RSAAlgorithm.to_jwk(key.public_key(), as_dict=True), "kid": "r1"}
    gcp.add_oidc_provider(
        PROVIDER, issuer_uri=ISSUER, allowed_audiences=[PROVIDER], jwks={"keys": [jwk]}
    )
    claims = {"sub": SUB, "aud": PROVIDER, "iss": ISSUER, "iat": NOW, "exp": NOW + 300}
    token = jwt.encode(claims, key, algorithm="RS256", headers={"kid": "r1"})
    assert _exchange(gcp, token)[0] == 200
    assert idp.fetches == []


def test_jwks_cached_and_refetched_on_unknown_kid(
    gcp: GcpEmulator, authority: JwtAuthority, idp: FakeIdp
) -> None:
    """Issuer keys are fetched once, and again for a kid not in the cache."""
    assert _exchange(gcp, _svid(authority))[0] == 200
    assert _exchange(gcp, _svid(authority))[0] == 200
    assert len(idp.fetches) == 2
    authority.rotate()
    assert _exchange(gcp, _svid(authority))[0] == 200
    assert len(idp.fetches) == 4


# -- aws4_request subject tokens -------------------------------------------------------------


@pytest.fixture
def aws_gcp(gcp: GcpEmulator) -> GcpEmulator:
    gcp.add_aws_provider(
        AWS_PROVIDER,
        account_id="111122223333",
        sts_url="http://127.0.0.1:4566/",
        attribute_condition="arn:aws:sts::111122223333:assumed-role/app/*",
    )
    return gcp


def _aws_exchange(gcp: GcpEmulator, token: str) -> tuple[int, dict[str, Any]]:
    return _exchange(gcp, token, audience=AWS_PROVIDER, subject_token_type=AWS_TOKEN_TYPE)


def test_aws_token_replayed_with_original_host(aws_gcp: GcpEmulator, fake_aws: FakeAws) -> None:
    """The signed GetCallerIdentity goes to sts_url with its Host kept; the ARN is the subject."""
    status, document = _aws_exchange(aws_gcp, _signed_aws_token())
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
        (lambda: _signed_aws_token(audience=PROVIDER), "invalid_grant", "target-resource"),
        (
            lambda: _signed_aws_token().replace("amazonaws.com", "example.com"),
            "invalid_grant",
            "STS",
        ),
        (
            lambda: _signed_aws_token().replace("GetCallerIdentity", "GetSessionToken"),
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
    status, document = _aws_exchange(aws_gcp, token if isinstance(token, str) else token())
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
    status, document = _aws_exchange(aws_gcp, _signed_aws_token())
    assert (status, document["error"]) == (400, "invalid_grant")
    assert document["error_description"] == (
        "Received invalid AWS response of type SignatureDoesNotMatch with error message: bad"
    )


def test_aws_account_and_condition(aws_gcp: GcpEmulator, fake_aws: FakeAws) -> None:
    """Another account is invalid_grant; an ARN outside the condition is unauthorized_client."""
    fake_aws.reply = (200, _caller_identity("444455556666"))
    assert _aws_exchange(aws_gcp, _signed_aws_token())[1]["error"] == "invalid_grant"
    aws_gcp.add_aws_provider(
        AWS_PROVIDER,
        account_id="111122223333",
        sts_url="http://127.0.0.1:4566",
        attribute_condition="arn:aws:sts::111122223333:assumed-role/other/*",
    )
    fake_aws.reply = (200, _caller_identity("111122223333"))
    assert _aws_exchange(aws_gcp, _signed_aws_token())[1]["error"] == "unauthorized_client"


def test_aws_unreachable_is_503(aws_gcp: GcpEmulator, fake_aws: FakeAws) -> None:
    """When AWS cannot be reached the exchange is temporarily_unavailable 503."""
    fake_aws.down = True
    assert _aws_exchange(aws_gcp, _signed_aws_token())[0] == 503


def test_token_type_must_fit_provider(aws_gcp: GcpEmulator, authority: JwtAuthority) -> None:
    """A JWT for an AWS provider, or an AWS token for an OIDC provider, is invalid_request."""
    status, document = _exchange(aws_gcp, _svid(authority), audience=AWS_PROVIDER)
    assert (status, document["error"]) == (400, "invalid_request")
    status, document = _exchange(aws_gcp, _signed_aws_token(), subject_token_type=AWS_TOKEN_TYPE)
    assert (status, document["error"]) == (400, "invalid_request")


# -- generateAccessToken ---------------------------------------------------------------------


def test_generate_access_token_shape(gcp: GcpEmulator, authority: JwtAuthority) -> None:
    """The reply is accessToken + expireTime without fractional seconds; whoami names the SA."""
    status, document = _iam(
        gcp, _federated(gcp, authority), {"scope": ["s1"], "lifetime": "1800s", "delegates": None}
    )
    assert status == 200
    assert set(document) == {"accessToken", "expireTime"}
    assert document["accessToken"].startswith("ya29.dev-")
    assert document["expireTime"] == "2027-01-15T08:30:00Z"  # NOW + 1800, truncated
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", document["expireTime"])
    grant = gcp.whoami(document["accessToken"])
    assert grant is not None
    assert (grant.principal, grant.service_account, grant.scopes) == (
        f"serviceAccount:{SA}",
        SA,
        ("s1",),
    )


def test_default_lifetime_and_unique_id_path(gcp: GcpEmulator, authority: JwtAuthority) -> None:
    """Without lifetime the token lives an hour; the account may be named by unique ID."""
    unique_id = gcp.service_accounts[SA].unique_id
    status, document = _iam(gcp, _federated(gcp, authority), account=unique_id)
    assert status == 200
    grant = gcp.whoami(document["accessToken"])
    assert grant is not None
    assert grant.expires_at == NOW + 0.5 + 3600


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"scope": ["s"], "lifetime": "3601s"}, "lifetime"),
        ({"scope": ["s"], "lifetime": "1h"}, "lifetime"),
        ({"scope": ["s"], "lifetime": "0s"}, "lifetime"),
        ({"scope": []}, "scope"),
        ({"lifetime": "60s"}, "scope"),
        ({"scope": ["s"], "delegates": ["other@proj.iam.gserviceaccount.com"]}, "delegate"),
    ],
    ids=["over-max", "bad-format", "zero", "no-scopes", "scope-missing", "delegate-form"],
)
def test_invalid_argument(
    gcp: GcpEmulator, authority: JwtAuthority, body: dict[str, Any], fragment: str
) -> None:
    """Bad bodies are 400 INVALID_ARGUMENT in Google's JSON error shape."""
    status, document = _iam(gcp, _federated(gcp, authority), body)
    code, state, message = _iam_error(document)
    assert (status, code, state) == (400, 400, "INVALID_ARGUMENT")
    assert fragment in message


def test_extended_lifetime_when_allowed(gcp: GcpEmulator, authority: JwtAuthority) -> None:
    """With max_lifetime 43200 (org policy), a 12 h token is granted, not more."""
    gcp.add_service_account(
        SA, workload_identity_users=[pool_principal_set(PROVIDER)], max_lifetime=43200
    )
    bearer = _federated(gcp, authority)
    assert _iam(gcp, bearer, {"scope": ["s"], "lifetime": "43200s"})[0] == 200
    assert _iam(gcp, bearer, {"scope": ["s"], "lifetime": "43201s"})[0] == 400


def test_permission_denied(gcp: GcpEmulator, authority: JwtAuthority) -> None:
    """Without workloadIdentityUser the call is 403 with Google's exact message."""
    gcp.add_service_account(SA)
    status, document = _iam(gcp, _federated(gcp, authority))
    assert (status, document) == (
        403,
        {"error": {"code": 403, "message": PERMISSION_DENIED, "status": "PERMISSION_DENIED"}},
    )


def test_binding_to_one_subject(gcp: GcpEmulator, authority: JwtAuthority) -> None:
    """A principal:// binding admits that subject only; a glob admits its pattern."""
    gcp.add_service_account(SA, workload_identity_users=[federated_principal(PROVIDER, SUB)])
    assert _iam(gcp, _federated(gcp, authority))[0] == 200
    other = _exchange(gcp, _svid(authority, sub="spiffe://example.org/x"))[1]["access_token"]
    assert _iam(gcp, other)[0] == 403
    glob = federated_principal(PROVIDER, "spiffe://example.org/*")
    gcp.add_service_account(SA, workload_identity_users=[glob])
    assert _iam(gcp, other)[0] == 200


def test_unknown_account_is_not_found(gcp: GcpEmulator, authority: JwtAuthority) -> None:
    """An unknown service account is 404 NOT_FOUND."""
    status, document = _iam(
        gcp, _federated(gcp, authority), account="nope@proj.iam.gserviceaccount.com"
    )
    assert (status, _iam_error(document)[1]) == (404, "NOT_FOUND")


@pytest.mark.parametrize(
    "bearer", [None, "", "ya29.dev-unknown"], ids=["no-header", "empty", "unknown-token"]
)
def test_unauthenticated(gcp: GcpEmulator, bearer: str | None) -> None:
    """A missing or unknown bearer token is 401 UNAUTHENTICATED."""
    status, document = _iam(gcp, bearer)
    assert (status, _iam_error(document)[1]) == (401, "UNAUTHENTICATED")


def test_expired_bearer(gcp: GcpEmulator, authority: JwtAuthority, clock: list[float]) -> None:
    """A federated token past its hour is 401, and whoami still knows it."""
    bearer = _federated(gcp, authority)
    clock[0] += 3601
    assert _iam(gcp, bearer)[0] == 401
    assert gcp.whoami(bearer) is not None


def test_insufficient_scopes(gcp: GcpEmulator, authority: JwtAuthority) -> None:
    """A bearer scoped to neither iam nor cloud-platform is 403."""
    status, document = _iam(gcp, _federated(gcp, authority, scope="openid email"))
    assert (status, _iam_error(document)[2]) == (
        403,
        "Request had insufficient authentication scopes.",
    )


def test_project_must_be_wildcard(gcp: GcpEmulator, authority: JwtAuthority) -> None:
    """projects/<id>/serviceAccounts is refused: the '-' wildcard is mandatory."""
    status, document = _iam(gcp, _federated(gcp, authority), project="my-project")
    assert (status, _iam_error(document)[1]) == (400, "INVALID_ARGUMENT")


def _chain(gcp: GcpEmulator, hops: int) -> list[str]:
    """Delegates d1..dn then the target: caller -> d1 -> ... -> dn -> target."""
    emails = [f"hop{i}@proj.iam.gserviceaccount.com" for i in range(1, hops + 1)] + [SA]
    holder = pool_principal_set(PROVIDER)
    for email in emails:
        if holder.startswith("principalSet://"):
            gcp.add_service_account(email, workload_identity_users=[holder])
        else:
            gcp.add_service_account(email, token_creators=[holder])
        holder = email
    return emails[:-1]


@pytest.mark.parametrize("hops", [0, 1, 3])
def test_delegation_chains(gcp: GcpEmulator, authority: JwtAuthority, hops: int) -> None:
    """Chains of 0, 1 and 3 delegates succeed when every hop holds token creator on the next."""
    delegates = _chain(gcp, hops)
    body = {"scope": ["s"], "delegates": [f"projects/-/serviceAccounts/{d}" for d in delegates]}
    status, document = _iam(gcp, _federated(gcp, authority), body)
    assert status == 200, document
    grant = gcp.whoami(document["accessToken"])
    assert grant is not None
    assert grant.delegates == tuple(delegates)


@pytest.mark.parametrize("broken", [0, 1, 2, 3])
def test_delegation_chain_broken_anywhere(
    gcp: GcpEmulator, authority: JwtAuthority, broken: int
) -> None:
    """Removing any one binding of a 3-delegate chain makes the call 403."""
    delegates = _chain(gcp, 3)
    accounts = [*delegates, SA]
    gcp.add_service_account(accounts[broken])  # same unique ID, no bindings
    body = {"scope": ["s"], "delegates": [f"projects/-/serviceAccounts/{d}" for d in delegates]}
    status, document = _iam(gcp, _federated(gcp, authority), body)
    assert (status, _iam_error(document)[2]) == (403, PERMISSION_DENIED)


def test_service_account_token_as_bearer(gcp: GcpEmulator, authority: JwtAuthority) -> None:
    """A service account token can impersonate another account it is token creator on."""
    other = "other@proj.iam.gserviceaccount.com"
    gcp.add_service_account(other, token_creators=[SA])
    sa_token = _iam(gcp, _federated(gcp, authority))[1]["accessToken"]
    assert _iam(gcp, sa_token, account=other)[0] == 200
    assert _iam(gcp, sa_token, account=SA)[0] == 403  # not token creator on itself


# -- generateIdToken --------------------------------------------------------------------------


def test_generate_id_token(gcp: GcpEmulator, authority: JwtAuthority) -> None:
    """The ID token is RS256 with kid, verifies with the served JWKS and names the SA."""
    body = {"audience": "sts.amazonaws.com", "includeEmail": True}
    status, document = _iam(gcp, _federated(gcp, authority), body, method="generateIdToken")
    assert status == 200
    token = document["token"]
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "RS256"
    (jwk,) = gcp.google_jwks()["keys"]
    assert header["kid"] == jwk["kid"]
    claims = jwt.decode(
        token,
        jwt.PyJWK(jwk).key,
        algorithms=["RS256"],
        audience="sts.amazonaws.com",
        options={"verify_exp": False, "verify_iat": False},
    )
    unique_id = gcp.service_accounts[SA].unique_id
    assert claims["iss"] == f"http://127.0.0.1:{PORT}/google"
    assert (claims["sub"], claims["azp"], claims["email"]) == (unique_id, unique_id, SA)
    assert claims["email_verified"] is True
    assert claims["exp"] - claims["iat"] == 3600


def test_generate_id_token_rules(gcp: GcpEmulator, authority: JwtAuthority) -> None:
    """No email unless asked; an audience is required; getOpenIdToken is checked."""
    bearer = _federated(gcp, authority)
    _, document = _iam(gcp, bearer, {"audience": "a"}, method="generateIdToken")
    assert "email" not in jwt.decode(document["token"], options={"verify_signature": False})
    status, document = _iam(gcp, bearer, {"includeEmail": True}, method="generateIdToken")
    assert (status, _iam_error(document)[1]) == (400, "INVALID_ARGUMENT")
    gcp.add_service_account(SA)
    status, document = _iam(gcp, bearer, {"audience": "a"}, method="generateIdToken")
    assert (status, _iam_error(document)[2]) == (
        403,
        "Permission 'iam.serviceAccounts.getOpenIdToken' denied on resource (or it may not exist).",
    )


def test_google_discovery_documents(gcp: GcpEmulator) -> None:
    """The ID-token issuer serves discovery and its JWKS under /google."""
    get = HttpRequest("GET", "/google/.well-known/openid-configuration", "", {})
    discovery = json.loads(gcp.handle(get).body)
    assert discovery["issuer"] == gcp.google_issuer
    assert discovery["jwks_uri"] == gcp.url + "/google/oauth2/v3/certs"
    keys = json.loads(gcp.handle(HttpRequest("GET", "/google/oauth2/v3/certs", "", {})).body)
    assert keys == gcp.google_jwks()
    assert gcp.handle(HttpRequest("GET", "/nope", "", {})).status == 404


# -- faults and recording --------------------------------------------------------------------


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
    got_status, document = _exchange(gcp, _svid(authority))
    assert (got_status, document["error"]) == (status, error)
    assert document["error_description"]
    assert _exchange(gcp, _svid(authority))[0] == 200


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
    bearer = _federated(gcp, authority)
    body = {"scope": ["s"], "audience": "a"}
    gcp.faults.fail_next(operation, failure)
    got_status, document = _iam(gcp, bearer, body, method=operation)
    code, state, message = _iam_error(document)
    assert (got_status, code, state) == (status, status, failure.code)
    assert message
    assert _iam(gcp, bearer, body, method=operation)[0] == 200


def test_requests_recorded(gcp: GcpEmulator, authority: JwtAuthority) -> None:
    """Requests are recorded with operation, form or JSON body and headers; repr hides them."""
    svid = _svid(authority)
    bearer = _exchange(gcp, svid)[1]["access_token"]
    _iam(gcp, bearer, {"scope": ["s"], "lifetime": "60s"})
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


def test_configuration_validation(gcp: GcpEmulator) -> None:
    """Providers and accounts refuse malformed names, IDs, members and lifetimes."""
    with pytest.raises(ValueError, match="resource name"):
        gcp.add_oidc_provider("projects/1/providers/x", issuer_uri=ISSUER)
    with pytest.raises(ValueError, match="12 digits"):
        gcp.add_aws_provider(AWS_PROVIDER, account_id="123", sts_url="http://127.0.0.1:1")
    with pytest.raises(ValueError, match="max_lifetime"):
        gcp.add_service_account(SA, max_lifetime=43201)
    with pytest.raises(ValueError, match="member"):
        gcp.add_service_account(SA, token_creators=["user:bob"])
    with pytest.raises(ValueError, match="email"):
        gcp.add_service_account("not-an-email")
