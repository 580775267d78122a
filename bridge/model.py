"""Immutable values that flow through the bridge: SVIDs, tokens, credentials, target status.

Secret fields are `repr=False`, so a value that reaches a log line or a traceback by
accident shows its shape, never its material.

Two kinds of time. `*_at` fields are UTC epoch seconds on this host's wall clock, for
what is written out (files, API timestamps, metrics): a cloud's expiry is carried over
in the host's terms (its `Expiration` minus the `Date` of the answer, from when we
asked), so SDKs on this host refresh on time even when its clock is off. `deadline`
fields are on the monotonic clock: whether something is still valid is always judged
there, so no wall-clock step (NTP, a bad RTC, a VM resume) can make an expired
credential look valid or a valid one look expired.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, is_dataclass, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from bridge.x509_svid import X509Svid

ISO_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def utc_iso(epoch: float) -> str:
    """RFC 3339 / ISO 8601 in UTC with a Z suffix and whole seconds, as the SDKs parse it."""
    return datetime.fromtimestamp(int(epoch), tz=UTC).strftime(ISO_FORMAT)


def parse_utc_iso(text: object) -> float:
    """The inverse of `utc_iso`; raises ValueError on anything else."""
    return datetime.strptime(str(text), ISO_FORMAT).replace(tzinfo=UTC).timestamp()


REDATE_BELOW = 0.5  # seconds: smaller differences are the clocks' jitter, not a step


@dataclass(frozen=True, slots=True)
class JwtSvid:
    """A JWT-SVID as fetched from the Workload API; `expires_at` in this host's terms,
    `deadline` on the monotonic clock (see the module docstring)."""

    spiffe_id: str
    audience: str
    expires_at: float
    issued_at: float
    token: str = field(repr=False)
    deadline: float = field(default=-1.0, kw_only=True)

    def secrets(self) -> tuple[str, ...]:
        return (self.token,)

    def in_terms_of(self, offset: float) -> JwtSvid:
        """Its wall-clock times in the terms of a host clock `offset` (wall minus
        monotonic) ahead of the monotonic one; see `Credential.in_terms_of`."""
        delta = offset + self.deadline - self.expires_at
        if abs(delta) < REDATE_BELOW:
            return self
        return replace(self, expires_at=self.expires_at + delta,
                       issued_at=self.issued_at + delta)


class Material(Protocol):
    """What a hop produces and the next consumes: an SVID, an OIDC token, or a cloud's
    own credential (the clouds define theirs beside their hops)."""

    @property
    def expires_at(self) -> float: ...

    def secrets(self) -> tuple[str, ...]:
        """Every secret string in it, for the log redactor."""
        ...


@dataclass(frozen=True, slots=True)
class IdToken:
    """An OIDC ID token minted by one hop for the next (a Google ID token for AWS, ...):
    a JWT that a cloud's STS accepts like a JWT-SVID."""

    token: str = field(repr=False)
    subject: str
    expires_at: float

    def secrets(self) -> tuple[str, ...]:
        return (self.token,)


@dataclass(frozen=True, slots=True)
class Credential:
    """What a target delivers: the final hop's `material`; `expires_at` is the earliest
    expiry among the chain's hops, so nothing outlives a link it was derived from."""

    target: str
    issued_at: float
    expires_at: float
    svid_expires_at: float
    material: Material
    deadline: float     # monotonic: valid while the monotonic clock is before it
    received: float     # monotonic: when it was asked for (the policy's `issued`)

    def secrets(self) -> tuple[str, ...]:
        return self.material.secrets()

    def remaining(self, now: float) -> float:
        """Seconds of validity left at monotonic `now`."""
        return self.deadline - now

    def in_terms_of(self, offset: float) -> Credential:
        """The same credential with its wall-clock times re-expressed for a host clock
        `offset` seconds (wall minus monotonic) ahead of the monotonic one, i.e. after
        this host's clock stepped; the deadline, on the monotonic clock, does not move.
        Idempotent: a credential already in those terms comes back as it is."""
        delta = offset + self.deadline - self.expires_at
        if abs(delta) < REDATE_BELOW:
            return self
        material = self.material
        if is_dataclass(material) and hasattr(material, "expires_at"):
            material = replace(material, expires_at=material.expires_at + delta)
        return replace(self, issued_at=self.issued_at + delta,
                       expires_at=self.expires_at + delta,
                       svid_expires_at=self.svid_expires_at + delta, material=material)


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
    # latest SVID, kept only for the opt-in files: the JWT-SVID (`jwt_file`), or the
    # X.509-SVID the credential was made with (`x509_files`)
    svid: JwtSvid | X509Svid | None = None
    last_success: float | None = None
    last_error: str | None = None        # a classified reason ("access_denied"), never a secret
    last_error_detail: str | None = None
    last_error_permanent: bool = False   # needs a config/IAM fix; retried only at the cap
    consecutive_failures: int = 0
    delivered: bool = False

    def valid_credential(self, now: float) -> Credential | None:
        """The credential while it is valid at monotonic `now`, else None."""
        c = self.credential
        return c if c is not None and c.deadline > now else None

    def served_state(self, now: float) -> State:
        """The state readers see: expired as soon as the credential is, even before the
        scheduler has taken it out of the store."""
        return self.state if self.valid_credential(now) is not None else State.EXPIRED

    def ready(self, now: float) -> bool:
        """Delivered at least once and holding something valid (`/readyz`, gRPC health):
        `served_state(now) is not EXPIRED`, spelled out (gRPC health asks it of every
        target on each store change; three calls a target were 3 % of a cold fill)."""
        c = self.credential
        return (self.delivered and c is not None and c.deadline > now
                and self.state is not State.EXPIRED)
