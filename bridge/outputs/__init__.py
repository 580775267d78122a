"""Where credentials go: the tmpfs credential directory (and, later, gRPC and metadata).

An output takes a whole snapshot of the store and makes the outside world match it;
outputs never call a token service themselves.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from bridge.model import TargetStatus


class Output(Protocol):
    name: str

    def apply(self, statuses: Mapping[str, TargetStatus], now: float) -> None:
        """Make this output reflect `statuses` (blocking; raises OutputError)."""
        ...
