"""Immutable values that flow through the bridge: SVIDs, cloud credentials, target status.

Secret fields are `repr=False`, so a value that reaches a log line or a traceback by
accident shows its shape, never its material. Times are UTC epoch seconds (float).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import UTC, datetime

ISO_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def utc_iso(epoch: float) -> str:
    """RFC 3339 / ISO 8601 in UTC with a Z suffix and whole seconds, as the SDKs parse it."""
    return datetime.fromtimestamp(int(epoch), tz=UTC).strftime(ISO_FORMAT)


def parse_utc_iso(text: object) -> float:
    """The inverse of `utc_iso`; raises ValueError on anything else."""
    return datetime.strptime(str(text), ISO_FORMAT).replace(tzinfo=UTC).timestamp()


@dataclass(frozen=True, slots=True)
class JwtSvid:
    """A JWT-SVID as fetched from the Workload API."""

    spiffe_id: str
    audience: str
    expires_at: float
    issued_at: float
    token: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class AwsCredentials:
    """Temporary AWS credentials from STS."""

    access_key_id: str = field(repr=False)
    secret_access_key: str = field(repr=False)
    session_token: str = field(repr=False)
    expires_at: float
    assumed_role_arn: str = ""


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


@dataclass(frozen=True, slots=True)
class GoogleIdToken:
    """A Google-signed OIDC ID token for a service account (GCP -> AWS chains)."""

    token: str = field(repr=False)
    subject: str
    expires_at: float


Material = JwtSvid | AwsCredentials | GcpToken | GoogleIdToken


@dataclass(frozen=True, slots=True)
class Credential:
    """What a target delivers: the final hop's material; `expires_at` is the earliest
    expiry among the chain's hops, so nothing outlives a link it was derived from."""

    target: str
    issued_at: float
    expires_at: float
    svid_expires_at: float
    aws: AwsCredentials | None = None
    gcp: GcpToken | None = None

    def secrets(self) -> tuple[str, ...]:
        values: list[str] = []
        if self.aws is not None:
            values += [self.aws.access_key_id, self.aws.secret_access_key,
                       self.aws.session_token]
        if self.gcp is not None:
            values.append(self.gcp.access_token)
        return tuple(values)


class State(enum.StrEnum):
    """A target's health as operators see it (metric `credential_state`)."""

    FRESH = "fresh"      # a valid credential, and the last refresh succeeded
    STALE = "stale"      # the last good credential is still valid, but refreshing fails
    EXPIRED = "expired"  # nothing valid to hand out (also before the first success)


@dataclass(frozen=True, slots=True)
class TargetStatus:
    """A target's snapshot in the store; replaced whole, never mutated."""

    name: str
    state: State = State.EXPIRED
    credential: Credential | None = None
    svid: JwtSvid | None = None          # latest SVID, kept only for the opt-in JWT file
    last_success: float | None = None
    last_error: str | None = None        # a classified reason ("access_denied"), never a secret
    last_error_detail: str | None = None
    last_error_permanent: bool = False   # needs a config/IAM fix; retried only at the cap
    consecutive_failures: int = 0
    delivered: bool = False

    def valid_credential(self, now: float) -> Credential | None:
        c = self.credential
        return c if c is not None and c.expires_at > now else None

    def served_state(self, now: float) -> State:
        """The state readers see: expired as soon as the credential is, even before the
        scheduler has taken it out of the store."""
        return self.state if self.valid_credential(now) is not None else State.EXPIRED

    def ready(self, now: float) -> bool:
        """Delivered at least once and holding something valid (`/readyz`, gRPC health)."""
        return self.delivered and self.served_state(now) is not State.EXPIRED
