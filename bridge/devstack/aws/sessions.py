"""The role sessions the emulator issued, and their credentials. DEVELOPMENT ONLY.

Both AssumeRole actions end by issuing a session here; the SigV4-signed actions then
look the caller's access key up again, so credentials issued by this emulator (and only
those) can sign AssumeRole and GetCallerIdentity. Secrets stay in memory, out of repr.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime

from bridge.devstack.aws.ids import (
    new_access_key_id,
    new_secret_access_key,
    new_session_token,
)
from bridge.devstack.aws.roles import TrustedRole, account_of


@dataclass(frozen=True, slots=True)
class IssuedCredentials:
    """Temporary credentials the emulator handed out (secrets hidden from repr).

    `subject` is the web identity token's `sub`, or for AssumeRole the caller's
    assumed-role ARN; `assumed_role_id` is GetCallerIdentity's UserId.
    """

    access_key_id: str
    secret_access_key: str = field(repr=False)
    session_token: str = field(repr=False)
    expiration: datetime
    role_arn: str
    assumed_role_arn: str
    session_name: str
    subject: str
    assumed_role_id: str = ""

    @property
    def account(self) -> str:
        """The 12-digit account of the role."""
        return account_of(self.role_arn)


class SessionStore:
    """Every session issued, oldest first, and the live ones by access key. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._issued: list[IssuedCredentials] = []
        self._by_key: dict[str, IssuedCredentials] = {}

    def issue(
        self, role: TrustedRole, session_name: str, subject: str, *, expires: int
    ) -> IssuedCredentials:
        """New credentials for a session of `role` that end at epoch second `expires`."""
        credentials = IssuedCredentials(
            access_key_id=new_access_key_id(),
            secret_access_key=new_secret_access_key(),
            session_token=new_session_token(),
            expiration=datetime.fromtimestamp(expires, UTC),
            role_arn=role.arn,
            assumed_role_arn=(
                f"arn:aws:sts::{role.account}:assumed-role/{role.name}/{session_name}"
            ),
            session_name=session_name,
            subject=subject,
            assumed_role_id=f"{role.role_id}:{session_name}",
        )
        with self._lock:
            self._issued.append(credentials)
            self._by_key[credentials.access_key_id] = credentials
        return credentials

    def get(self, access_key_id: str) -> IssuedCredentials | None:
        """The session of an access key issued here (expired ones too)."""
        with self._lock:
            return self._by_key.get(access_key_id)

    @property
    def issued(self) -> tuple[IssuedCredentials, ...]:
        """Every set of credentials handed out, oldest first."""
        with self._lock:
            return tuple(self._issued)
