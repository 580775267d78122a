"""The emulated Google project: its workload identity providers and service accounts.

DEVELOPMENT ONLY. `GcpProject` is what `add_oidc_provider`, `add_aws_provider` and
`add_service_account` fill in, and what the token exchange and IAM Credentials read.
"""

from __future__ import annotations

import dataclasses
import re
import threading
from collections.abc import Iterable, Mapping
from typing import Any

from bridge.devstack.gcp.providers import (
    AttributeCondition,
    AwsWorkloadProvider,
    OidcWorkloadProvider,
    WorkloadProvider,
    pool_of,
)
from bridge.devstack.gcp.service_accounts import (
    DEFAULT_LIFETIME,
    EXTENDED_MAX_LIFETIME,
    ServiceAccount,
    member,
    new_unique_id,
)
from bridge.devstack.jwks import IssuerKeys


class GcpProject:
    """Providers by resource name and service accounts by email. Thread-safe.

    `keys` is the cache of issuers' JWKS: adding an OIDC provider forgets its issuer's
    keys, so a test that replaces an issuer is not served stale ones.
    """

    def __init__(self, keys: IssuerKeys) -> None:
        self._keys = keys
        self._lock = threading.Lock()
        self._providers: dict[str, WorkloadProvider] = {}
        self._accounts: dict[str, ServiceAccount] = {}

    def add_oidc_provider(
        self,
        audience: str,
        *,
        issuer_uri: str,
        allowed_audiences: Iterable[str] = (),
        attribute_condition: AttributeCondition = None,
        enabled: bool = True,
        jwks: Mapping[str, Any] | None = None,
    ) -> OidcWorkloadProvider:
        """Create (or replace) an OIDC provider named by its full resource name.

        `jwks` plays Google's uploaded `jwksJson`: then discovery is never fetched.

        Raises:
            ValueError: `audience` is not a provider resource name, or more than 10
                allowed audiences.
        """
        pool_of(audience)
        audiences = tuple(allowed_audiences)
        if isinstance(allowed_audiences, str) or len(audiences) > 10:
            raise ValueError("allowed_audiences must be a list of at most 10 strings")
        provider = OidcWorkloadProvider(
            audience=audience,
            issuer_uri=issuer_uri.rstrip("/"),
            allowed_audiences=audiences,
            condition=attribute_condition,
            enabled=enabled,
            jwks=jwks,
        )
        with self._lock:
            self._providers[audience] = provider
            self._keys.forget(provider.issuer_uri)
        return provider

    def add_aws_provider(
        self,
        audience: str,
        *,
        account_id: str,
        sts_url: str,
        attribute_condition: AttributeCondition = None,
        enabled: bool = True,
    ) -> AwsWorkloadProvider:
        """Create (or replace) an AWS provider for `account_id`, verified via `sts_url`.

        Raises:
            ValueError: bad resource name, account ID not 12 digits, or `sts_url` not http(s).
        """
        pool_of(audience)
        if re.fullmatch(r"\d{12}", account_id) is None:
            raise ValueError(f"account_id must be 12 digits: {account_id!r}")
        if not sts_url.startswith(("http://", "https://")):
            raise ValueError(f"sts_url must be an http(s) URL: {sts_url!r}")
        provider = AwsWorkloadProvider(
            audience=audience,
            account_id=account_id,
            sts_url=sts_url.rstrip("/"),
            condition=attribute_condition,
            enabled=enabled,
        )
        with self._lock:
            self._providers[audience] = provider
        return provider

    def set_provider_enabled(self, audience: str, enabled: bool) -> None:
        """Enable or disable a provider (a disabled one is `invalid_target`).

        Raises:
            KeyError: no such provider.
        """
        with self._lock:
            provider = self._providers[audience]
            self._providers[audience] = dataclasses.replace(provider, enabled=enabled)

    def add_service_account(
        self,
        email: str,
        *,
        workload_identity_users: Iterable[str] = (),
        token_creators: Iterable[str] = (),
        max_lifetime: int = DEFAULT_LIFETIME,
        unique_id: str | None = None,
    ) -> ServiceAccount:
        """Create (or replace, keeping its unique ID) a service account and its bindings.

        Members are IAM member strings (`principal://`, `principalSet://`,
        `serviceAccount:`); a bare email means `serviceAccount:<email>`.
        `max_lifetime` above 3600 plays the org policy that allows up to 43200 s.

        Raises:
            ValueError: malformed email, member or unique ID; max_lifetime outside
                3600..43200.
        """
        if re.fullmatch(r"[^@\s/:]+@[^@\s/:]+", email) is None:
            raise ValueError(f"not a service account email: {email!r}")
        if not DEFAULT_LIFETIME <= max_lifetime <= EXTENDED_MAX_LIFETIME:
            raise ValueError(f"max_lifetime must be within 3600..43200, got {max_lifetime}")
        if unique_id is not None and re.fullmatch(r"\d{21}", unique_id) is None:
            raise ValueError(f"unique_id must be 21 digits: {unique_id!r}")
        users = tuple(member(m) for m in workload_identity_users)
        creators = tuple(member(m) for m in token_creators)
        with self._lock:
            previous = self._accounts.get(email)
            if unique_id is None:
                unique_id = previous.unique_id if previous else new_unique_id()
            account = ServiceAccount(
                email=email,
                unique_id=unique_id,
                workload_identity_users=users,
                token_creators=creators,
                max_lifetime=max_lifetime,
            )
            self._accounts[email] = account
        return account

    def provider(self, audience: str) -> WorkloadProvider | None:
        """The provider with this resource name, if any."""
        with self._lock:
            return self._providers.get(audience)

    def service_account(self, name: str) -> ServiceAccount | None:
        """The service account with this email or unique ID, if any."""
        with self._lock:
            return self._accounts.get(name) or next(
                (a for a in self._accounts.values() if a.unique_id == name), None
            )

    @property
    def providers(self) -> Mapping[str, WorkloadProvider]:
        """Providers by resource name (a snapshot)."""
        with self._lock:
            return dict(self._providers)

    @property
    def service_accounts(self) -> Mapping[str, ServiceAccount]:
        """Service accounts by email (a snapshot)."""
        with self._lock:
            return dict(self._accounts)
