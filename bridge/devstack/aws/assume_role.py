"""AssumeRole: role chaining with credentials this emulator issued. DEVELOPMENT ONLY.

The request is SigV4-signed (see `authentication`). The target role's
`trusted_principals` must match the caller (its role ARN, its assumed-role ARN, or
`arn:aws:iam::<account>:root`; `*`/`?` globs allowed) and, when the role sets one, the
ExternalId must be the same (else AccessDenied 403). Every caller is a role session, so
DurationSeconds > 3600 is the role-chaining ValidationError.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Mapping

from bridge.devstack._http import HttpRequest
from bridge.devstack.aws.authentication import authenticate
from bridge.devstack.aws.context import StsContext
from bridge.devstack.aws.documents import assume_role_result
from bridge.devstack.aws.errors import CHAINED_DURATION_EXCEEDED, StsError
from bridge.devstack.aws.params import check_parameters

CHAINED_MAX_DURATION = 3600  # AWS caps sessions assumed with role-session credentials


def assume_role(
    context: StsContext, params: Mapping[str, str], request: HttpRequest
) -> ET.Element:
    """The action's result for this signed request.

    Raises:
        StsError: authentication (see `authentication`), parameters, AccessDenied, or
            a DurationSeconds too long for role chaining or for the role.
    """
    caller = authenticate(request, context.sessions, context.clock())
    checked = check_parameters(params, web_identity=False)
    role = context.directory.role(checked.role_arn)
    if (
        role is None
        or not role.trusts_session(caller)
        or (role.external_id is not None and checked.external_id != role.external_id)
    ):
        raise StsError.of(
            "AccessDenied",
            f"User: {caller.assumed_role_arn} is not authorized to perform: "
            f"sts:AssumeRole on resource: {checked.role_arn}",
        )
    # Every caller here holds role-session credentials, so this is role chaining.
    if checked.duration > CHAINED_MAX_DURATION:
        raise StsError.of("ValidationError", CHAINED_DURATION_EXCEEDED)
    checked.check_duration(role)
    credentials = context.sessions.issue(
        role, checked.session_name, caller.assumed_role_arn,
        expires=int(context.clock()) + checked.duration,
    )
    return assume_role_result(
        credentials, packed_policy_size=checked.packed_policy_size
    )
