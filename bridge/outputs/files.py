"""What a cloud says of its files: values the credential directory mirrors the store
into. A `TargetFile` per target (rendered from its valid credential, removed when there
is none) and a `SharedFile` for what several targets share (`aws/credentials`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from bridge.model import Credential, Material


@dataclass(frozen=True, slots=True)
class TargetFile:
    """One file of one target, `path` relative to the directory (`aws/etl.json`).

    `render` makes it from the target's valid credential; with none it is removed, so
    nothing expired is left to read. `static` content (config-derived, no secret) is
    written whatever the credential's state.
    """

    path: str
    output: str  # bounded metric label: aws_process, gcp_token, ...
    render: Callable[[Credential], bytes] | None = None
    static: bytes | None = None


@dataclass(frozen=True, slots=True)
class SharedFile:
    """A file several targets share: `render` gets the valid credentials of `targets`,
    sorted by target. It is created once one of them is valid ("the file exists" means
    "something in it is ready") and kept in step from then on."""

    path: str
    output: str
    targets: frozenset[str]
    render: Callable[[Sequence[Credential]], bytes]


def recovered(target: str, material: Material, *, now: float,
              mono: float) -> Credential | None:
    """A credential a previous run wrote, read back: served only while still valid (its
    expiry was written in this host's terms, so what is left is by the wall clock now)."""
    left = material.expires_at - now
    if left <= 0:
        return None
    return Credential(target=target, issued_at=now, expires_at=material.expires_at,
                      svid_expires_at=0.0, material=material, deadline=mono + left,
                      received=mono)
