"""What every metadata endpoint of a cloud shares: its listener `address`, who may read
it (`allowed_uids`), and the rule that it serves only targets whose last hop is its
cloud's.

`allowed_uids` names the local users whose processes may read the endpoint: the owner
of the caller's socket is looked up per connection (`peers.peer_uid`). An endpoint with
no other gate (IMDS, GCE: any local process could ask) must say it, or say `any` to
serve every local user; the container endpoint already needs its token file, so there
it is optional."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from bridge.schema import Section, check_loopback_address, clip

MAX_UID = 2**32 - 2  # (uid_t)-1 is "no user"


class _Hop(Protocol):
    @property
    def cloud(self) -> str: ...


class ServedTarget(Protocol):
    """What the rule needs of a target."""

    @property
    def final(self) -> _Hop: ...


class CloudEndpoint:
    """Base of the clouds' `Endpoint`s: `key`, `single`, and whose credential it serves."""

    key: str
    single: bool
    cloud: str  # the cloud whose material the endpoint hands out
    title: str  # how the message names it: "an AWS"
    config_type: Callable[..., object]  # its `metadata.<key>` dataclass: address, extras
    uids_required: bool = True  # no other gate: `allowed_uids` must be written out

    def read(self, section: Section, *, directory: str) -> object | None:
        """Its `metadata.<key>` section: the listener `address`, `allowed_uids` and
        `read_extra`'s keys."""
        address = section.get("address", str, "", required=True, check=check_loopback_address)
        uids = read_allowed_uids(section, f"metadata.{self.key}",
                                 required=self.uids_required)
        extra = self.read_extra(section, directory=directory)
        return self.config_type(address=address, allowed_uids=uids, **extra) if address \
            else None

    def exposure(self, config: object, targets: Sequence[str]) -> str:
        """What `check` prints: what the listener hands out, and to whom."""
        address = getattr(config, "address", "?")
        uids = getattr(config, "allowed_uids", None)
        who = "every local user" if uids is None else (
            "uid " if len(uids) == 1 else "uids ") + ", ".join(str(u) for u in uids)
        gate = self.gate(config)
        return (f"metadata.{self.key} on {address} serves {', '.join(targets) or 'nothing'} "
                f"to {who}{f' {gate}' if gate else ''}")

    def gate(self, config: object) -> str:
        """Hook: what a caller needs beyond its uid, as `check` says it."""
        return ""

    def read_extra(self, section: Section, *, directory: str) -> dict[str, object]:
        """Hook: the section's keys beyond `address`, as config fields."""
        return {}

    def serve_problem(self, target: ServedTarget) -> str | None:
        if target.final.cloud == self.cloud:
            return None
        return (f"{self.key} needs {self.title} credential; this target's last hop is "
                "another cloud")


def read_allowed_uids(section: Section, where: str, *,
                      required: bool) -> tuple[int, ...] | None:
    """`allowed_uids`: a list of uids, or `any` (None: every local user)."""
    value = section.raw("allowed_uids")
    if value is None:
        if required:
            section.error("allowed_uids", f"is required: {where} hands its credential to "
                          "any local process that asks; list the uids that may read it "
                          "(e.g. [1000]), or write `allowed_uids: any` to serve every "
                          "local user")
        return None
    if value == "any":
        return None
    if not isinstance(value, list) or not value:
        section.error("allowed_uids", f"{clip(str(value))} is not a list of uids or `any`")
        return None
    for i, uid in enumerate(value):
        if not isinstance(uid, int) or isinstance(uid, bool) or not 0 <= uid <= MAX_UID:
            section.problems.add(f"{section.key('allowed_uids')}[{i}]",
                                 f"{clip(str(uid))} is not a uid (0..{MAX_UID})")
            return None
    if len(set(value)) != len(value):
        section.error("allowed_uids", "lists a uid twice")
    return tuple(value)
