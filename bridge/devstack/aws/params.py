"""The request parameters of both AssumeRole actions, checked as AWS does. DEVELOPMENT ONLY.

Model constraints come first and are reported together (`N validation errors detected:
...`), as AWS does; then the RoleArn format, then the Policy's JSON:

RoleArn 20..2048, RoleSessionName `[\\w+=,.@-]{2,64}`, WebIdentityToken 4..20000,
ExternalId `[\\w+=,.@:/-]{2,1224}`, DurationSeconds 900..43200, Policy 1..2048
                                                   -> ValidationError 400
RoleArn not a role ARN                             -> ValidationError 400
Policy not JSON                                    -> MalformedPolicyDocument 400
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from bridge.devstack.aws.errors import MAX_SESSION_EXCEEDED, StsError
from bridge.devstack.aws.roles import EXTERNAL_ID, MAX_DURATION, ROLE_ARN, TrustedRole

MIN_DURATION = 900
DEFAULT_DURATION = 3600
_MAX_POLICY = 2048
_SESSION_NAME = re.compile(r"[\w+=,.@-]{2,64}", re.ASCII)


@dataclass(frozen=True, slots=True)
class RoleRequest:
    """The checked parameters; `token` is "" and `external_id` None where they do not apply."""

    role_arn: str
    session_name: str
    duration: int
    policy: str | None
    token: str = field(default="", repr=False)
    external_id: str | None = field(default=None, repr=False)

    @property
    def packed_policy_size(self) -> int | None:
        """PackedPolicySize, the percentage of the allowed policy size used (None: no policy)."""
        return None if self.policy is None else min(100, len(self.policy) * 100 // _MAX_POLICY)

    def check_duration(self, role: TrustedRole) -> None:
        """DurationSeconds within the role's MaxSessionDuration.

        Raises:
            StsError: ValidationError.
        """
        if self.duration > role.max_session_duration:
            raise StsError.of("ValidationError", MAX_SESSION_EXCEEDED)


def check_parameters(params: Mapping[str, str], *, web_identity: bool) -> RoleRequest:
    """The parameters of AssumeRoleWithWebIdentity (`web_identity`) or AssumeRole.

    Raises:
        StsError: ValidationError or MalformedPolicyDocument (see the module docstring).
    """
    problems: list[str] = []

    def required(name: str, member: str, low: int, high: int) -> str:
        value = params.get(name)
        if value is None:
            problems.append(
                f"Value null at '{member}' failed to satisfy constraint: Member must not be null"
            )
            return ""
        if len(value) < low:
            problems.append(
                f"Value at '{member}' failed to satisfy constraint: "
                f"Member must have length greater than or equal to {low}"
            )
        elif len(value) > high:
            problems.append(
                f"Value at '{member}' failed to satisfy constraint: "
                f"Member must have length less than or equal to {high}"
            )
        return value

    role_arn = required("RoleArn", "roleArn", 20, 2048)
    session_name = required("RoleSessionName", "roleSessionName", 2, 64)
    if session_name and _SESSION_NAME.fullmatch(session_name) is None:
        problems.append(
            f"Value '{session_name[:64]}' at 'roleSessionName' failed to satisfy constraint: "
            r"Member must satisfy regular expression pattern: [\w+=,.@-]*"
        )
    token = required("WebIdentityToken", "webIdentityToken", 4, 20000) if web_identity else ""
    external_id = None if web_identity else params.get("ExternalId")
    if external_id is not None and EXTERNAL_ID.fullmatch(external_id) is None:
        problems.append(
            "Value at 'externalId' failed to satisfy constraint: Member must have length "
            r"between 2 and 1224 and satisfy regular expression pattern: [\w+=,.@:\/-]*"
        )
    duration = _duration(params.get("DurationSeconds"), problems)
    policy = params.get("Policy")
    if policy is not None and not 1 <= len(policy) <= _MAX_POLICY:
        problems.append(
            "Value at 'policy' failed to satisfy constraint: "
            "Member must have length between 1 and 2048"
        )
    if problems:
        count = len(problems)
        noun = "error" if count == 1 else "errors"
        raise StsError.of(
            "ValidationError", f"{count} validation {noun} detected: " + "; ".join(problems)
        )
    if role_arn and ROLE_ARN.fullmatch(role_arn) is None:
        raise StsError.of("ValidationError", "Request ARN is invalid")
    if policy is not None:
        try:
            json.loads(policy)
        except ValueError as err:
            raise StsError.of("MalformedPolicyDocument") from err
    return RoleRequest(role_arn, session_name, duration, policy, token, external_id)


def _duration(raw: str | None, problems: list[str]) -> int:
    """DurationSeconds (default 3600); a constraint it breaks is added to `problems`."""
    if raw is None:
        return DEFAULT_DURATION
    try:
        duration = int(raw)
    except ValueError:
        problems.append(
            "Value at 'durationSeconds' failed to satisfy constraint: Member must be an integer"
        )
        return DEFAULT_DURATION
    if duration < MIN_DURATION:
        problems.append(
            f"Value '{duration}' at 'durationSeconds' failed to satisfy "
            f"constraint: Member must have value greater than or equal to {MIN_DURATION}"
        )
    elif duration > MAX_DURATION:
        problems.append(
            f"Value '{duration}' at 'durationSeconds' failed to satisfy "
            f"constraint: Member must have value less than or equal to {MAX_DURATION}"
        )
    return duration
