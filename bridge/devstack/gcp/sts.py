"""Google STS `POST /v1/token`: RFC 8693 token exchange for a federated token.

DEVELOPMENT ONLY. The form is checked first (grant and token types, the provider's
resource name as `audience`, `options`), then the provider (unknown or disabled:
`invalid_target`), then the subject token: a JWT for OIDC providers (`oidc_subject`),
an `aws4_request` for AWS providers (`aws_replay`). `google.subject` is `sub` (or the
AWS `arn`) and must fit 127 bytes; then the attribute condition runs (a callable on
the assertion, or a StringLike glob on `sub`/`arn`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from bridge.devstack._http import HttpRequest
from bridge.devstack.gcp.aws_replay import verify_aws
from bridge.devstack.gcp.context import GcpContext
from bridge.devstack.gcp.oidc_subject import verify_oidc
from bridge.devstack.gcp.providers import PROVIDER_NAME, OidcWorkloadProvider, condition_holds
from bridge.devstack.gcp.replies import StsError
from bridge.devstack.gcp.tokens import GoogleToken, new_token

# RFC 8693 / Google type names (not secrets).
TOKEN_EXCHANGE_GRANT = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"
JWT_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:jwt"
ID_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:id_token"
AWS_TOKEN_TYPE = "urn:ietf:params:aws:token-type:aws4_request"

FEDERATED_TOKEN_LIFETIME = 3600
MAX_SUBJECT_BYTES = 127

CONDITION_REJECTED = "The given credential is rejected by the attribute condition."
INVALID_TARGET = (
    'The target service indicated by the "audience" parameters is invalid. This might either '
    "be because the pool or provider is disabled or deleted or because it doesn't exist."
)
SUBJECT_TOO_LONG = (
    "The size of mapped attribute google.subject exceeds the 127 bytes limit. Either modify "
    "your attribute mapping or the incoming assertion to produce a mapped attribute that is "
    "less than 127 bytes."
)


def token_exchange(
    context: GcpContext, request: HttpRequest, form: Mapping[str, str]
) -> Mapping[str, Any]:
    """The token endpoint's JSON reply for this form.

    Raises:
        StsError: see the module docstring.
    """
    if request.method != "POST":
        raise StsError("invalid_request", "The token endpoint only accepts POST.")
    audience, token_type, subject_token = _check_exchange_form(form)
    provider = context.project.provider(audience)
    if provider is None or not provider.enabled:
        raise StsError("invalid_target", INVALID_TARGET)
    assertion: Mapping[str, Any]
    if isinstance(provider, OidcWorkloadProvider):
        if token_type == AWS_TOKEN_TYPE:
            raise StsError("invalid_request", "The provider does not accept AWS tokens.")
        assertion, key = verify_oidc(
            provider, subject_token, keys=context.keys, clock=context.clock
        ), "sub"
        subject = str(assertion["sub"])
    else:
        if token_type != AWS_TOKEN_TYPE:
            raise StsError("invalid_request", "The provider only accepts AWS tokens.")
        assertion, key = verify_aws(
            provider, subject_token, replay=context.replay, timeout=context.idp_timeout
        ), "arn"
        subject = str(assertion["arn"])
    if len(subject.encode()) > MAX_SUBJECT_BYTES:
        raise StsError("invalid_grant", SUBJECT_TOO_LONG)
    if not condition_holds(provider.condition, assertion, key):
        raise StsError("unauthorized_client", CONDITION_REJECTED)
    token = context.tokens.remember(
        GoogleToken(
            token=new_token(),
            principal=provider.principal(subject),
            scopes=tuple(form.get("scope", "").split()),
            expires_at=context.clock() + FEDERATED_TOKEN_LIFETIME,
            provider=provider.audience,
            subject=subject,
        )
    )
    return {
        "access_token": token.token,
        "issued_token_type": ACCESS_TOKEN_TYPE,
        "token_type": "Bearer",
        "expires_in": FEDERATED_TOKEN_LIFETIME,
    }


def _check_exchange_form(form: Mapping[str, str]) -> tuple[str, str, str]:
    """The request-level checks; returns audience, subject_token_type and subject_token."""
    if form.get("grant_type") != TOKEN_EXCHANGE_GRANT:
        raise StsError("unsupported_grant_type", 'Invalid value for "grant_type".')
    if form.get("requested_token_type") != ACCESS_TOKEN_TYPE:
        raise StsError("invalid_request", 'Invalid value for "requested_token_type".')
    token_type = form.get("subject_token_type", "")
    if token_type not in (JWT_TOKEN_TYPE, ID_TOKEN_TYPE, AWS_TOKEN_TYPE):
        raise StsError("invalid_request", 'Invalid value for "subject_token_type".')
    subject_token = form.get("subject_token", "")
    if not subject_token:
        raise StsError("invalid_request", 'Missing required field "subject_token".')
    audience = form.get("audience", "")
    if PROVIDER_NAME.fullmatch(audience) is None:
        raise StsError(
            "invalid_request",
            'Invalid value for "audience". This value should be the full resource name of '
            "the Identity Provider. See https://cloud.google.com/iam/docs/reference/sts/"
            "rest/v1/TopLevel/token for the list of possible formats.",
        )
    _check_options(form.get("options"))
    return audience, token_type, subject_token


def _check_options(raw: str | None) -> None:
    if raw is None:
        return
    try:
        options = json.loads(raw)
    except ValueError:
        options = None
    if not isinstance(options, dict):
        raise StsError("invalid_request", 'Invalid value for "options": not a JSON object.')
    user_project = options.get("userProject")
    if user_project is not None and (not isinstance(user_project, str) or len(user_project) > 32):
        raise StsError("invalid_request", 'Invalid value for "options.userProject".')
    audiences = options.get("audiences")
    if audiences is not None and (not isinstance(audiences, list) or len(audiences) > 5):
        raise StsError("invalid_request", 'Invalid value for "options.audiences".')
