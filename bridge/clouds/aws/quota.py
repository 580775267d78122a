"""The STS quota an AWS hop's calls count against (PROTOCOLS.md §11).

STS request quotas are per account and region, shared by every caller in the account:
600 requests/s for signed calls such as AssumeRole (IAM and STS quotas, "STS request
quotas"). AssumeRoleWithWebIdentity has no published figure (it is reported throttled
at a few requests/s in practice); it is budgeted in the same scope at the same rate,
and operators who see it throttled set `refresh.scope_rates` for the scope.
"""

from __future__ import annotations

from bridge.clouds.base import Quota

STS_RATE = 600.0
SOURCE = "AWS IAM and STS quotas: STS request quotas (600 req/s per account per region)"


def account_of(role_arn: str) -> str:
    """The 12-digit account of an IAM role ARN (`arn:aws:iam::<account>:role/...`)."""
    parts = role_arn.split(":")
    return parts[4] if len(parts) > 4 and parts[4] else "unknown"


def sts_quota(*, account: str, region: str) -> Quota:
    return Quota(scope=f"aws_sts {account} {region or 'us-east-1'}", rate=STS_RATE,
                 source=SOURCE)
