"""GCP material: a Google OAuth access token."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class GcpToken:
    """A Google OAuth access token (federated, or a service account's).

    `federated_token` is kept when impersonation happened, because the next hop of a
    GCP->AWS chain mints the Google ID token with the federated principal's rights.
    """

    access_token: str = field(repr=False)
    expires_at: float
    principal: str  # service account email, or the workload identity provider
    federated_token: str | None = field(default=None, repr=False)
    token_type: str = "Bearer"  # noqa: S105 - the OAuth token type, not a secret

    def secrets(self) -> tuple[str, ...]:
        return (self.access_token,) + ((self.federated_token,) if self.federated_token else ())
