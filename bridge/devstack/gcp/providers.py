"""Workload identity pool providers and the principals they yield. DEVELOPMENT ONLY.

A provider is named by its full resource name
`//iam.googleapis.com/projects/<n>/locations/global/workloadIdentityPools/<pool>/providers/<p>`
(the STS `audience`). Its federated identities are IAM members
`principal://iam.googleapis.com/<pool>/subject/<google.subject>`; the whole pool is
`principalSet://iam.googleapis.com/<pool>/*`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from bridge.devstack.globs import string_like

IAM_HOST = "iam.googleapis.com"
PROVIDER_NAME = re.compile(
    r"//iam\.googleapis\.com/(?P<pool>projects/\d+/locations/global/workloadIdentityPools/"
    r"[a-z0-9-]{4,32})/providers/[a-z0-9-]{4,32}",
    re.ASCII,
)

AttributeCondition = Callable[[Mapping[str, Any]], bool] | str | None
"""A provider's attribute condition: a predicate on the assertion (OIDC claims, or
`{"arn", "account", "userid"}` for AWS), a StringLike glob on `sub`/`arn`, or None."""


def pool_of(audience: str) -> str:
    """`projects/<n>/locations/global/workloadIdentityPools/<pool>` of a provider name.

    Raises:
        ValueError: not a workload identity provider resource name.
    """
    match = PROVIDER_NAME.fullmatch(audience)
    if match is None:
        raise ValueError(f"not a workload identity provider resource name: {audience!r}")
    return match.group("pool")


def federated_principal(provider_audience: str, subject: str) -> str:
    """The IAM member of one federated identity: `principal://.../subject/<subject>`."""
    return f"principal://{IAM_HOST}/{pool_of(provider_audience)}/subject/{subject}"


def pool_principal_set(provider_audience: str) -> str:
    """The IAM member of every identity in the provider's pool: `principalSet://.../*`."""
    return f"principalSet://{IAM_HOST}/{pool_of(provider_audience)}/*"


def condition_holds(condition: AttributeCondition, assertion: Mapping[str, Any], key: str) -> bool:
    """Whether the attribute condition admits the assertion (a glob matches `key`)."""
    if condition is None:
        return True
    if isinstance(condition, str):
        return string_like(condition).fullmatch(str(assertion.get(key, ""))) is not None
    return bool(condition(assertion))


@dataclass(frozen=True, slots=True)
class OidcWorkloadProvider:
    """A workload identity pool OIDC provider, named by its full resource name."""

    audience: str
    issuer_uri: str
    allowed_audiences: tuple[str, ...]
    condition: AttributeCondition = field(compare=False)
    enabled: bool = True
    jwks: Mapping[str, Any] | None = field(default=None, compare=False, repr=False)

    def principal(self, subject: str) -> str:
        """The `principal://` member for a `google.subject` of this provider."""
        return federated_principal(self.audience, subject)

    def accepts_audience(self, aud: Iterable[str]) -> bool:
        """Google's rule: one of `allowed_audiences`, or (none set) the resource name."""
        allowed = set(self.allowed_audiences) or {self.audience, "https:" + self.audience}
        return any(a in allowed for a in aud)


@dataclass(frozen=True, slots=True)
class AwsWorkloadProvider:
    """A workload identity pool AWS provider: one account, verified through `sts_url`."""

    audience: str
    account_id: str
    sts_url: str
    condition: AttributeCondition = field(compare=False)
    enabled: bool = True

    def principal(self, subject: str) -> str:
        """The `principal://` member for a `google.subject` (an ARN) of this provider."""
        return federated_principal(self.audience, subject)


WorkloadProvider = OidcWorkloadProvider | AwsWorkloadProvider
