"""The IAM side of the emulated account: OIDC providers, roles, trust. DEVELOPMENT ONLY.

`IamDirectory` is what `register_oidc_provider` and `add_role` fill in and what every
action reads: which issuers are OIDC providers (with their client IDs), and which roles
exist, whom their trust policy allows and for how long.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from bridge.devstack.aws.ids import new_role_id
from bridge.devstack.globs import string_like
from bridge.devstack.jwks import IssuerKeys

DEFAULT_MAX_SESSION_DURATION = 3600
MAX_DURATION = 43200

ROLE_ARN = re.compile(
    r"arn:aws[a-z-]*:iam::(?P<account>\d{12}):role/(?:[\w+=,.@-]+/)*(?P<name>[\w+=,.@-]{1,64})",
    re.ASCII,
)
EXTERNAL_ID = re.compile(r"[\w+=,.@:/-]{2,1224}", re.ASCII)


def normalize_provider_url(url: str) -> str:
    """The provider key IAM uses: no trailing slash, `https://` when no scheme is given."""
    url = url.strip().rstrip("/")
    return url if "://" in url else f"https://{url}"


def account_of(role_arn: str) -> str:
    """The 12-digit account of a role ARN ("" if it is not one)."""
    match = ROLE_ARN.fullmatch(role_arn)
    return match.group("account") if match else ""


class RoleSession(Protocol):
    """A caller holding role-session credentials (as `IssuedCredentials` does)."""

    @property
    def role_arn(self) -> str: ...

    @property
    def assumed_role_arn(self) -> str: ...

    @property
    def account(self) -> str: ...


@dataclass(frozen=True, slots=True)
class OidcProvider:
    """An IAM OIDC identity provider: issuer URL and accepted client IDs (audiences)."""

    url: str
    client_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class TrustedRole:
    """An IAM role: whom its trust policy allows, with optional conditions.

    Web identity: `provider_url` (None: no OIDC provider is trusted); `aud` is matched
    exactly (StringEquals); `sub` exactly, or as a StringLike glob when it contains `*`
    or `?`. None means no condition on that key. Role chaining: `trusted_principals`
    (role, assumed-role or account-root ARNs, globs allowed) and an optional
    `sts:ExternalId` condition.
    """

    arn: str
    provider_url: str | None
    aud: str | None
    sub: str | None
    max_session_duration: int
    role_id: str
    trusted_principals: tuple[str, ...] = ()
    external_id: str | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        """The role name (last path segment of the ARN)."""
        match = ROLE_ARN.fullmatch(self.arn)
        assert match is not None  # checked by add_role
        return match.group("name")

    @property
    def account(self) -> str:
        """The 12-digit account ID."""
        return account_of(self.arn)

    def trusts(self, aud: Iterable[str], sub: str) -> bool:
        """Whether the trust-policy conditions hold for these claims."""
        if self.aud is not None and self.aud not in set(aud):
            return False
        if self.sub is None:
            return True
        if "*" in self.sub or "?" in self.sub:
            return string_like(self.sub).fullmatch(sub) is not None
        return sub == self.sub

    def trusts_session(self, caller: RoleSession) -> bool:
        """Whether an AWS principal in the trust policy covers this role session.

        A role ARN trusts every session of that role (as in IAM); `:root` the account.
        """
        names = (caller.role_arn, caller.assumed_role_arn)
        for pattern in self.trusted_principals:
            if pattern == f"arn:aws:iam::{caller.account}:root":
                return True
            if any(string_like(pattern).fullmatch(name) for name in names):
                return True
        return False


class IamDirectory:
    """OIDC providers by normalized URL and roles by ARN. Thread-safe.

    `keys` is the cache of issuers' JWKS: (re-)registering a provider forgets its
    issuer's keys, so a test that replaces an issuer is not served stale ones.
    """

    def __init__(self, keys: IssuerKeys) -> None:
        self._keys = keys
        self._lock = threading.Lock()
        self._providers: dict[str, OidcProvider] = {}
        self._roles: dict[str, TrustedRole] = {}

    def register_oidc_provider(self, url: str, client_ids: Iterable[str]) -> OidcProvider:
        """Register (or replace) an IAM OIDC provider for issuer `url`; forgets its keys.

        Raises:
            ValueError: no client IDs.
        """
        accepted = tuple(client_ids)
        if isinstance(client_ids, str) or not accepted:
            raise ValueError("client_ids must be a non-empty list of strings")
        provider = OidcProvider(normalize_provider_url(url), accepted)
        with self._lock:
            self._providers[provider.url] = provider
            self._keys.forget(provider.url)
        return provider

    def add_role(
        self,
        role_arn: str,
        *,
        provider_url: str | None = None,
        aud: str | None = None,
        sub: str | None = None,
        max_session_duration: int = DEFAULT_MAX_SESSION_DURATION,
        trusted_principals: Iterable[str] = (),
        external_id: str | None = None,
    ) -> TrustedRole:
        """Create (or replace) a role trusting an OIDC provider and/or AWS principals.

        `provider_url` with `aud`/`sub` conditions is for AssumeRoleWithWebIdentity;
        `trusted_principals` (role, assumed-role or `arn:aws:iam::<acct>:root` ARNs,
        `*`/`?` globs allowed) and `external_id` are for AssumeRole.

        Raises:
            ValueError: malformed role ARN, max_session_duration outside 3600..43200,
                nobody trusted, a principal that is not an ARN, or a malformed external ID.
        """
        if ROLE_ARN.fullmatch(role_arn) is None:
            raise ValueError(f"not an IAM role ARN: {role_arn!r}")
        if not DEFAULT_MAX_SESSION_DURATION <= max_session_duration <= MAX_DURATION:
            raise ValueError(
                f"max_session_duration must be within 3600..43200, got {max_session_duration}"
            )
        principals = (
            (trusted_principals,)
            if isinstance(trusted_principals, str)
            else tuple(trusted_principals)
        )
        if provider_url is None and not principals:
            raise ValueError("a role must trust an OIDC provider or AWS principals")
        if any(not p.startswith("arn:aws") for p in principals):
            raise ValueError(f"trusted principals must be ARNs: {principals!r}")
        if external_id is not None and EXTERNAL_ID.fullmatch(external_id) is None:
            raise ValueError("external_id must be 2..1224 characters of [\\w+=,.@:/-]")
        role = TrustedRole(
            arn=role_arn,
            provider_url=None if provider_url is None else normalize_provider_url(provider_url),
            aud=aud,
            sub=sub,
            max_session_duration=max_session_duration,
            role_id=new_role_id(),
            trusted_principals=principals,
            external_id=external_id,
        )
        with self._lock:
            self._roles[role_arn] = role
        return role

    def provider(self, issuer: str) -> OidcProvider | None:
        """The provider registered for this issuer URL, if any."""
        with self._lock:
            return self._providers.get(normalize_provider_url(issuer))

    def role(self, role_arn: str) -> TrustedRole | None:
        """The role with this ARN, if any."""
        with self._lock:
            return self._roles.get(role_arn)

    @property
    def providers(self) -> Mapping[str, OidcProvider]:
        """Registered OIDC providers by normalized URL (a snapshot)."""
        with self._lock:
            return dict(self._providers)

    @property
    def roles(self) -> Mapping[str, TrustedRole]:
        """Roles by ARN (a snapshot)."""
        with self._lock:
            return dict(self._roles)
