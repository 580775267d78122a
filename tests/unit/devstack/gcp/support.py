"""Calling GcpEmulator.handle without sockets, and a fake AWS STS to replay to."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from google.auth import aws

from bridge.devstack import HttpRequest, JwtAuthority
from bridge.devstack.gcp import (
    ACCESS_TOKEN_TYPE,
    AWS_TOKEN_TYPE,
    IAM_SCOPE,
    JWT_TOKEN_TYPE,
    TOKEN_EXCHANGE_GRANT,
    GcpEmulator,
)
from tests.unit.devstack.fakes import SUB, form_post

POOL = "projects/123456/locations/global/workloadIdentityPools/spire"
PROVIDER = f"//iam.googleapis.com/{POOL}/providers/spire"
AWS_PROVIDER = (
    "//iam.googleapis.com/projects/123456/locations/global/workloadIdentityPools/aws-pool/"
    "providers/aws-prov"
)
SA = "app@proj.iam.gserviceaccount.com"
PORT = 9  # never bound: the emulator is only called through handle()
PERMISSION_DENIED = (
    "Permission 'iam.serviceAccounts.getAccessToken' denied on resource (or it may not exist)."
)


class FakeAws:
    """Plays AWS STS for replayed GetCallerIdentity requests; records what it got."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, str]]] = []
        self.reply: tuple[int, bytes] = (200, caller_identity_xml("111122223333"))
        self.down = False

    def __call__(
        self, url: str, headers: Mapping[str, str], body: bytes, timeout: float
    ) -> tuple[int, bytes]:
        self.calls.append((url, dict(headers)))
        if self.down:
            raise ConnectionRefusedError("down")
        return self.reply


def caller_identity_xml(account: str) -> bytes:
    return (
        '<GetCallerIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">'
        f"<GetCallerIdentityResult><Arn>arn:aws:sts::{account}:assumed-role/app/s1</Arn>"
        f"<UserId>AROAEXAMPLE:s1</UserId><Account>{account}</Account>"
        "</GetCallerIdentityResult></GetCallerIdentityResponse>"
    ).encode()


def mint_svid(authority: JwtAuthority, sub: str = SUB, **overrides: Any) -> str:
    return authority.mint(sub, [PROVIDER], 300, extra_claims=overrides or None)


def exchange(gcp: GcpEmulator, token: str, **overrides: str) -> tuple[int, dict[str, Any]]:
    form = {
        "grant_type": TOKEN_EXCHANGE_GRANT,
        "audience": PROVIDER,
        "scope": IAM_SCOPE,
        "requested_token_type": ACCESS_TOKEN_TYPE,
        "subject_token": token,
        "subject_token_type": JWT_TOKEN_TYPE,
        **overrides,
    }
    request = form_post("/v1/token", form)
    response = gcp.handle(request)
    return response.status, json.loads(response.body)


def federated_token(gcp: GcpEmulator, authority: JwtAuthority, **overrides: str) -> str:
    status, document = exchange(gcp, mint_svid(authority), **overrides)
    assert status == 200, document
    return str(document["access_token"])


def call_iam(
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


def iam_error(document: Mapping[str, Any]) -> tuple[int, str, str]:
    error = document["error"]
    return error["code"], error["status"], error["message"]


def signed_aws_token(audience: str = AWS_PROVIDER, region: str = "us-east-1") -> str:
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


def aws_exchange(gcp: GcpEmulator, token: str) -> tuple[int, dict[str, Any]]:
    return exchange(gcp, token, audience=AWS_PROVIDER, subject_token_type=AWS_TOKEN_TYPE)
