"""Calling AwsStsEmulator.handle without sockets, and reading its XML."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from typing import Any

import jwt

from bridge.devstack import JwtAuthority
from bridge.devstack.aws import STS_NAMESPACE, AwsStsEmulator
from tests.unit.devstack.fakes import SUB, form_post

ROLE = "arn:aws:iam::111122223333:role/path/demo"
NS = {"sts": STS_NAMESPACE}


def mint_token(authority: JwtAuthority, **overrides: Any) -> str:
    return authority.mint(SUB, ["sts.amazonaws.com"], 300, extra_claims=overrides or None)


def with_header(token: str, header: dict[str, str]) -> str:
    """The same claims and signature under another header (e.g. a lying alg)."""
    encoded = jwt.utils.base64url_encode(json.dumps(header).encode()).decode()
    return ".".join([encoded, *token.split(".")[1:]])


def call_sts(sts: AwsStsEmulator, **params: str) -> tuple[int, ET.Element, dict[str, str]]:
    form = {"Action": "AssumeRoleWithWebIdentity", "Version": "2011-06-15", **params}
    request = form_post(
        "/", form, content_type="application/x-www-form-urlencoded; charset=utf-8"
    )
    response = sts.handle(request)
    return response.status, ET.fromstring(response.body), dict(response.headers)


def assume(sts: AwsStsEmulator, token: str, **params: str) -> tuple[int, ET.Element]:
    base = {"RoleArn": ROLE, "RoleSessionName": "app", "WebIdentityToken": token}
    status, root, _ = call_sts(sts, **{**base, **params})
    return status, root


def error_of(root: ET.Element) -> tuple[str, str, str]:
    return (
        root.findtext("sts:Error/sts:Type", namespaces=NS) or "",
        root.findtext("sts:Error/sts:Code", namespaces=NS) or "",
        root.findtext("sts:Error/sts:Message", namespaces=NS) or "",
    )
