"""Azure material: an Entra ID access token for one resource."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class AzureToken:
    """An Entra access token (`resource` is its `aud`: the scope without `/.default`)."""

    access_token: str = field(repr=False)
    expires_at: float
    tenant_id: str
    client_id: str
    resource: str
    token_type: str = "Bearer"  # noqa: S105 - the OAuth token type, not a secret

    def secrets(self) -> tuple[str, ...]:
        return (self.access_token,)
