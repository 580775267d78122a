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


def read_section(a: Section) -> list[AwsHopConfig | None]:
    """A target's `aws:` section: the first hop, then its `chain:` shorthand (DESIGN's
    `aws.chain`: AssumeRole with role, external id, session name, duration)."""
    hops = [read_hop(a, first=True)]
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
