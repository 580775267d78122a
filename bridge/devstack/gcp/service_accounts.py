"""Service accounts and who may mint their tokens. DEVELOPMENT ONLY.

Bindings are IAM member strings: `principal://` (one federated identity),
`principalSet://iam.googleapis.com/<pool>/*` (a whole pool) and
`serviceAccount:<email>`. As a dev convenience `*`/`?` globs work in `principal://`
members. workloadIdentityUser and serviceAccountTokenCreator both grant
getAccessToken/getOpenIdToken, so a member of either may call generateAccessToken and
generateIdToken.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from bridge.devstack.gcp.providers import IAM_HOST
from bridge.devstack.globs import string_like

DEFAULT_LIFETIME = 3600
EXTENDED_MAX_LIFETIME = 43200  # with constraints/iam.allowServiceAccountCredentialLifetimeExtension


def member(value: str) -> str:
    """An IAM member string; a bare email means `serviceAccount:<email>`.

    Raises:
        ValueError: neither a member nor an email.
    """
    if value.startswith(("principal://", "principalSet://", "serviceAccount:")):
        return value
    if "@" in value and ":" not in value:
        return f"serviceAccount:{value}"
    raise ValueError(f"not an IAM member or service account email: {value!r}")


def new_unique_id() -> str:
    """21 digits starting with 1, like Google's service account unique IDs."""
    return "1" + str(secrets.randbelow(10**20)).zfill(20)


def _member_matches(binding: str, principal: str) -> bool:
    if binding.startswith("principalSet://") and binding.endswith("/*"):
        pool = binding.removeprefix(f"principalSet://{IAM_HOST}/")[:-2]
        return principal.startswith(f"principal://{IAM_HOST}/{pool}/subject/")
    return string_like(binding).fullmatch(principal) is not None


@dataclass(frozen=True, slots=True)
class ServiceAccount:
    """A service account and the members allowed to mint its tokens."""

    email: str
    unique_id: str
    workload_identity_users: tuple[str, ...]
    token_creators: tuple[str, ...]
    max_lifetime: int

    @property
    def member(self) -> str:
        """`serviceAccount:<email>`, the principal of tokens issued for this account."""
        return f"serviceAccount:{self.email}"

    def allows(self, principal: str) -> bool:
        """Whether `principal` holds getAccessToken/getOpenIdToken on this account."""
        bindings = (*self.workload_identity_users, *self.token_creators)
        return any(_member_matches(binding, principal) for binding in bindings)
