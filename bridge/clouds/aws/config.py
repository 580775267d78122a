"""The `aws:` keys: a target's AWS section, its `chain:` shorthand, and AWS chain hops.

An AWS hop is AssumeRoleWithWebIdentity when fed a token (the JWT-SVID, or an ID token
minted by the hop before it for `audience`), and AssumeRole when it follows another AWS
hop (signed with that session). Chained hops without `region`/`sts_endpoint` inherit
the previous AWS hop's when the chain is built.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import ClassVar

from bridge.schema import Section, check_audience, check_endpoint, clip

DEFAULT_AUDIENCE = "sts.amazonaws.com"
_ROLE_ARN = re.compile(r"arn:aws(-cn|-us-gov|-iso|-iso-b)?:iam::\d{12}:role/[\w+=,.@/-]{1,512}",
                       re.ASCII)
_REGION = re.compile(r"[a-z]{2}(-[a-z]+)+-\d{1,2}", re.ASCII)
_SESSION_NAME = re.compile(r"[\w+=,.@-]{2,64}", re.ASCII)
_EXTERNAL_ID = re.compile(r"[\w+=,.@:/-]{2,1224}", re.ASCII)
CHAINED_MAX_DURATION = 3600.0  # AWS caps sessions assumed with role-session credentials
# arn:aws:rolesanywhere:<region>:<account>:trust-anchor/<uuid> and .../profile/<uuid>
_RA_ARN = r"arn:aws(-cn|-us-gov)?:rolesanywhere:[a-z]{2}(-[a-z]+)+-\d{1,2}:\d{12}:%s/[\w-]{1,64}"
_TRUST_ANCHOR_ARN = re.compile(_RA_ARN % "trust-anchor", re.ASCII)
_PROFILE_ARN = re.compile(_RA_ARN % "profile", re.ASCII)


@dataclass(frozen=True, slots=True)
class AwsHopConfig:
    """One AWS hop (see the module docstring)."""

    cloud: ClassVar[str] = "aws"
    role_arn: str
    region: str
    duration: float = 3600.0
    session_name: str | None = None
    sts_endpoint: str | None = None
    external_id: str | None = field(default=None, repr=False)
    audience: str = DEFAULT_AUDIENCE


@dataclass(frozen=True, slots=True)
class RolesAnywhereHopConfig(AwsHopConfig):
    """An IAM Roles Anywhere `CreateSession`: the first hop of a `source: x509` target,
    signed with the X.509-SVID's key. Its `sts_endpoint` serves the AssumeRole hops
    after it (its own call goes to `endpoint`, default rolesanywhere.<region>)."""

    trust_anchor_arn: str = ""
    profile_arn: str = ""
    endpoint: str | None = None

    @property
    def url(self) -> str:
        base = self.endpoint or f"https://rolesanywhere.{self.region}.amazonaws.com"
        return base.rstrip("/") + "/sessions"


def read_section(a: Section) -> list[AwsHopConfig | None]:
    """A target's `aws:` section: the first hop, then its `chain:` shorthand (DESIGN's
    `aws.chain`: AssumeRole with role, external id, session name, duration)."""
    hops: list[AwsHopConfig | None] = [
        read_roles_anywhere(a) if a.has("trust_anchor_arn") else read_hop(a, first=True)]
    for c in a.items("chain"):
        hops.append(read_hop(c, shorthand=True))
        c.finish()
    return hops


def read_hop(a: Section, *, first: bool = False, shorthand: bool = False) -> AwsHopConfig | None:
    """An AWS hop. `first`: from the JWT-SVID (its audience is the target's).
    `shorthand`: an element of `aws.chain` (no region, endpoint or audience)."""
    role_arn = a.get("role_arn", str, "", required=True, check=_check_role_arn)
    endpoint = None if shorthand else (
        a.get("sts_endpoint", str, "", check=check_endpoint) or None)
    region = "" if shorthand else a.get(
        "region", str, "", required=first and not a.has("sts_endpoint"), check=_check_region)
    # 15m..12h is what STS accepts; the role's own maximum is checked by STS itself.
    duration = a.duration("duration", 3600.0, minimum=900, maximum=43200)
    session_name = a.get("session_name", str, "", check=_check_session_name) or None
    external_id = None if first else (
        a.get("external_id", str, "", check=_check_external_id) or None)
    audience = DEFAULT_AUDIENCE if first or shorthand else a.get(
        "audience", str, DEFAULT_AUDIENCE, check=check_audience)
    if not role_arn or (first and not (region or endpoint)):
        return None
    return AwsHopConfig(role_arn=role_arn, region=region, duration=duration,
                        session_name=session_name, sts_endpoint=endpoint,
                        external_id=external_id, audience=audience)


def read_roles_anywhere(a: Section) -> RolesAnywhereHopConfig | None:
    """A first hop with `trust_anchor_arn`: Roles Anywhere (DESIGN's `aws: {trust_anchor_arn,
    profile_arn, role_arn, region, duration}`, plus `endpoint`)."""
    anchor = a.get("trust_anchor_arn", str, "", required=True, check=_check_anchor)
    profile = a.get("profile_arn", str, "", required=True, check=_check_profile)
    role_arn = a.get("role_arn", str, "", required=True, check=_check_role_arn)
    region = a.get("region", str, "", required=True, check=_check_region)
    # CreateSession takes 900..43200 s; the profile's own durationSeconds caps it.
    duration = a.duration("duration", 3600.0, minimum=900, maximum=43200)
    endpoint = a.get("endpoint", str, "", check=check_endpoint) or None
    sts_endpoint = a.get("sts_endpoint", str, "", check=check_endpoint) or None
    session_name = a.get("session_name", str, "", check=_check_session_name) or None
    if not (anchor and profile and role_arn and region):
        return None
    return RolesAnywhereHopConfig(role_arn=role_arn, region=region, duration=duration,
                                  session_name=session_name, sts_endpoint=sts_endpoint,
                                  trust_anchor_arn=anchor, profile_arn=profile,
                                  endpoint=endpoint)


def _check_anchor(v: str) -> str | None:
    if _TRUST_ANCHOR_ARN.fullmatch(v):
        return None
    return (f"{clip(v)} is not a Roles Anywhere trust anchor ARN "
            "(arn:aws:rolesanywhere:<region>:<account>:trust-anchor/<id>)")


def _check_profile(v: str) -> str | None:
    if _PROFILE_ARN.fullmatch(v):
        return None
    return (f"{clip(v)} is not a Roles Anywhere profile ARN "
            "(arn:aws:rolesanywhere:<region>:<account>:profile/<id>)")


def _check_role_arn(v: str) -> str | None:
    if _ROLE_ARN.fullmatch(v) and len(v) <= 2048:
        return None
    return (f"{clip(v)} is not an IAM role ARN "
            "(arn:aws:iam::<12-digit account>:role/<name>)")


def _check_external_id(v: str) -> str | None:
    return None if _EXTERNAL_ID.fullmatch(v) else "must be 2-1224 characters of [\\w+=,.@:/-]"


def _check_region(v: str) -> str | None:
    return None if _REGION.fullmatch(v) else f"{clip(v)} is not an AWS region (e.g. us-east-1)"


def _check_session_name(v: str) -> str | None:
    if _SESSION_NAME.fullmatch(v):
        return None
    return "must be 2-64 characters of letters, digits and +=,.@_- (no '/' or ':')"
