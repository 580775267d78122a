"""IAM Credentials `generateAccessToken` and `generateIdToken`. DEVELOPMENT ONLY.

`POST /v1/projects/-/serviceAccounts/{email|unique id}:generate...`, with
`Authorization: Bearer` an access token issued here (federated or a service account's)
carrying the cloud-platform or iam scope. The caller must be a member (see
`service_accounts`) on the first delegate or the target, and each delegate a member on
the next. Errors are Google's JSON with canonical statuses (see `replies`).
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote

from bridge.devstack._http import HttpRequest
from bridge.devstack.gcp.context import GcpContext
from bridge.devstack.gcp.replies import IamError
from bridge.devstack.gcp.service_accounts import (
    DEFAULT_LIFETIME,
    EXTENDED_MAX_LIFETIME,
    ServiceAccount,
)
from bridge.devstack.gcp.tokens import GoogleToken, new_token

OP_GENERATE_ACCESS_TOKEN = "generateAccessToken"
OP_GENERATE_ID_TOKEN = "generateIdToken"
CLOUD_PLATFORM_SCOPE = "https://www.googleapis.com/auth/cloud-platform"
IAM_SCOPE = "https://www.googleapis.com/auth/iam"
UNAUTHENTICATED = (
    "Request had invalid authentication credentials. Expected OAuth 2 access token, login "
    "cookie or other valid authentication credential. See "
    "https://developers.google.com/identity/sign-in/web/devconsole-project."
)

IAM_PATH = re.compile(
    r"/v1/projects/(?P<project>[^/]+)/serviceAccounts/(?P<name>[^/:]+)"
    r":(?P<method>generateAccessToken|generateIdToken)",
)
_DELEGATE = re.compile(r"projects/-/serviceAccounts/(?P<name>[^/]+)")
_LIFETIME = re.compile(r"(?P<seconds>\d+)(?:\.\d{1,9})?s", re.ASCII)


def generate_token(
    context: GcpContext, request: HttpRequest, match: re.Match[str], body: Any
) -> Mapping[str, Any]:
    """The JSON reply of the method `IAM_PATH` matched, for this JSON body.

    Raises:
        IamError: NOT_FOUND, INVALID_ARGUMENT, UNAUTHENTICATED or PERMISSION_DENIED.
    """
    if request.method != "POST":
        raise IamError("NOT_FOUND", "Method not found.", 404)
    if match.group("project") != "-":
        raise IamError(
            "INVALID_ARGUMENT",
            "The project must be the wildcard '-': projects/-/serviceAccounts/{ACCOUNT}.",
        )
    caller = _bearer(context, request)
    if not {CLOUD_PLATFORM_SCOPE, IAM_SCOPE} & set(caller.scopes):
        raise IamError("PERMISSION_DENIED", "Request had insufficient authentication scopes.")
    if not isinstance(body, dict):
        raise IamError("INVALID_ARGUMENT", "Invalid JSON payload received.")
    target = _account(context, unquote(match.group("name")))
    delegates = _delegates(context, body.get("delegates") or [])
    access = match.group("method") == OP_GENERATE_ACCESS_TOKEN
    if access:
        scopes, lifetime = _access_token_request(body, target)
    elif not isinstance(body.get("audience"), str) or not body["audience"]:
        raise IamError("INVALID_ARGUMENT", "Audience is required.")
    holder = caller.principal
    for account in (*delegates, target):
        if not account.allows(holder):
            raise _denied("getAccessToken" if access else "getOpenIdToken")
        holder = account.member
    now = context.clock()
    if access:
        token = context.tokens.remember(
            GoogleToken(
                token=new_token(),
                principal=target.member,
                scopes=scopes,
                expires_at=now + lifetime,
                service_account=target.email,
                delegates=tuple(d.email for d in delegates),
            )
        )
        return {"accessToken": token.token, "expireTime": _rfc3339(token.expires_at)}
    id_token = context.issuer.mint(
        target, str(body["audience"]), include_email=body.get("includeEmail") is True, now=now
    )
    return {"token": id_token}


def _bearer(context: GcpContext, request: HttpRequest) -> GoogleToken:
    scheme, _, token = request.header("Authorization").partition(" ")
    grant = context.tokens.get(token.strip()) if scheme.lower() == "bearer" else None
    if grant is None or grant.expires_at <= context.clock():
        raise IamError("UNAUTHENTICATED", UNAUTHENTICATED)
    return grant


def _account(context: GcpContext, name: str) -> ServiceAccount:
    account = context.project.service_account(name)
    if account is None:
        raise IamError("NOT_FOUND", f"Not found; Gaia id not found for email {name[:256]}")
    return account


def _delegates(context: GcpContext, raw_delegates: object) -> list[ServiceAccount]:
    if not isinstance(raw_delegates, list):
        raise IamError("INVALID_ARGUMENT", "Invalid value at 'delegates'.")
    delegates: list[ServiceAccount] = []
    for raw in raw_delegates:
        found = _DELEGATE.fullmatch(raw) if isinstance(raw, str) else None
        if found is None:
            raise IamError(
                "INVALID_ARGUMENT",
                f"Invalid form of delegate {str(raw)[:128]!r}: "
                "expected projects/-/serviceAccounts/{ACCOUNT_EMAIL_OR_UNIQUEID}.",
            )
        delegates.append(_account(context, found.group("name")))
    return delegates


def _denied(permission: str) -> IamError:
    return IamError(
        "PERMISSION_DENIED",
        f"Permission 'iam.serviceAccounts.{permission}' denied on resource (or it may not exist).",
    )


def _rfc3339(epoch: float) -> str:
    """`YYYY-MM-DDTHH:MM:SSZ`: google-auth parses expireTime with exactly this format."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(epoch)))


def _access_token_request(
    body: Mapping[str, Any], target: ServiceAccount
) -> tuple[tuple[str, ...], int]:
    """generateAccessToken's body rules; returns the scopes and the lifetime in seconds."""
    scopes = body.get("scope")
    if (
        not isinstance(scopes, list)
        or not scopes
        or not all(isinstance(s, str) and s for s in scopes)
    ):
        raise IamError("INVALID_ARGUMENT", "At least one scope is required.")
    raw = body.get("lifetime")
    lifetime = DEFAULT_LIFETIME
    if raw is not None:
        match = _LIFETIME.fullmatch(raw) if isinstance(raw, str) else None
        if match is None:
            raise IamError(
                "INVALID_ARGUMENT",
                f"Invalid value at 'lifetime' (type.googleapis.com/google.protobuf.Duration), "
                f"{str(raw)[:32]!r}",
            )
        lifetime = int(match.group("seconds"))
    if lifetime < 1:
        raise IamError("INVALID_ARGUMENT", "The lifetime must be at least 1s.")
    if lifetime > target.max_lifetime:
        raise IamError(
            "INVALID_ARGUMENT",
            f"The requested lifetime {lifetime}s exceeds the maximum lifetime "
            f"{target.max_lifetime}s for {target.email}; up to {EXTENDED_MAX_LIFETIME}s needs "
            "constraints/iam.allowServiceAccountCredentialLifetimeExtension.",
        )
    return tuple(scopes), lifetime
