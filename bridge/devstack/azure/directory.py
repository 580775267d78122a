"""The emulated directory: tenants, app registrations with their federated identity
credentials, and the resources tokens can be asked for. DEVELOPMENT ONLY.

Limits are Entra's (PROTOCOLS.md §7, Microsoft Graph `federatedIdentityCredential`):
at most 20 federated credentials per app; `issuer` and `subject` at most 600
characters, matched exactly (case-sensitive, as Entra has matched since 2025); one
audience per credential, default `api://AzureADTokenExchange`; `name` at most 120.
"""

from __future__ import annotations

import threading
import uuid
from dataclasses import dataclass, field

MAX_FEDERATED_CREDENTIALS = 20
MAX_CLAIM_LENGTH = 600
MAX_NAME_LENGTH = 120
EXCHANGE_AUDIENCE = "api://AzureADTokenExchange"


@dataclass(frozen=True, slots=True)
class FederatedCredential:
    """One trust: tokens from `issuer` with `sub == subject` and `audience` in `aud`."""

    name: str
    issuer: str
    subject: str
    audience: str = EXCHANGE_AUDIENCE


@dataclass(frozen=True, slots=True)
class Resource:
    """What a token can be for: its identifier URI (the scope without `/.default`) and
    the token version its API accepts (1: `iss` sts.windows.net, as Azure Storage)."""

    uri: str
    version: int = 1


@dataclass
class App:
    """An app registration (its service principal in the same tenant)."""

    client_id: str
    object_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    enabled: bool = True
    federated: list[FederatedCredential] = field(default_factory=list)


@dataclass
class Tenant:
    """A directory: its apps by client ID, its resources by URI."""

    tenant_id: str
    apps: dict[str, App] = field(default_factory=dict)
    resources: dict[str, Resource] = field(default_factory=dict)


class Directory:
    """Tenants by ID; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tenants: dict[str, Tenant] = {}

    def add_tenant(self, tenant_id: str) -> Tenant:
        with self._lock:
            return self._tenants.setdefault(tenant_id, Tenant(tenant_id))

    def tenant(self, tenant_id: str) -> Tenant | None:
        with self._lock:
            return self._tenants.get(tenant_id)

    def add_app(self, tenant_id: str, client_id: str, *, object_id: str | None = None) -> App:
        tenant = self.add_tenant(tenant_id)
        app = App(client_id, object_id) if object_id else App(client_id)
        with self._lock:
            return tenant.apps.setdefault(client_id, app)

    def add_resource(self, tenant_id: str, uri: str, *, version: int = 1) -> Resource:
        tenant = self.add_tenant(tenant_id)
        resource = Resource(uri.rstrip("/"), version)
        with self._lock:
            tenant.resources[resource.uri] = resource
        return resource

    def add_federated_credential(self, tenant_id: str, client_id: str,
                                 credential: FederatedCredential) -> None:
        """Raises ValueError where Graph refuses: the 21st credential, a long or
        duplicate name, a claim over 600 characters."""
        app = self.add_app(tenant_id, client_id)
        for what, value in (("issuer", credential.issuer), ("subject", credential.subject),
                            ("audience", credential.audience)):
            if not value or len(value) > MAX_CLAIM_LENGTH:
                raise ValueError(f"{what} must be 1-{MAX_CLAIM_LENGTH} characters")
        if not credential.name or len(credential.name) > MAX_NAME_LENGTH:
            raise ValueError(f"name must be 1-{MAX_NAME_LENGTH} characters")
        with self._lock:
            if any(c.name == credential.name for c in app.federated):
                raise ValueError(f"a federated credential named {credential.name} exists")
            if len(app.federated) >= MAX_FEDERATED_CREDENTIALS:
                raise ValueError("an application can have at most "
                                 f"{MAX_FEDERATED_CREDENTIALS} federated identity credentials")
            app.federated.append(credential)

    def remove_federated_credential(self, tenant_id: str, client_id: str, name: str) -> None:
        app = self.add_app(tenant_id, client_id)
        with self._lock:
            app.federated[:] = [c for c in app.federated if c.name != name]

    def federated(self, tenant_id: str, client_id: str) -> tuple[FederatedCredential, ...]:
        tenant = self.tenant(tenant_id)
        with self._lock:
            app = tenant.apps.get(client_id) if tenant else None
            return tuple(app.federated) if app else ()
