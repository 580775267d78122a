"""What every metadata endpoint of a cloud shares: its listener address key and the
rule that it serves only targets whose last hop is its cloud's."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from bridge.schema import Section, check_loopback_address


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

    def read(self, section: Section, *, directory: str) -> object | None:
        """Its `metadata.<key>` section: the listener `address` and `read_extra`'s keys."""
        address = section.get("address", str, "", required=True, check=check_loopback_address)
        extra = self.read_extra(section, directory=directory)
        return self.config_type(address=address, **extra) if address else None

    def read_extra(self, section: Section, *, directory: str) -> dict[str, object]:
        """Hook: the section's keys beyond `address`, as config fields."""
        return {}

    def serve_problem(self, target: ServedTarget) -> str | None:
        if target.final.cloud == self.cloud:
            return None
        return (f"{self.key} needs {self.title} credential; this target's last hop is "
                "another cloud")
