"""The `refresh:` keys for fleets: the node's spread seed, call budgets, coalescing.

    refresh:
      node_id: ip-10-0-0-1         # seeds the refresh spread (default: NODE_NAME, host name)
      node_index: 17               # this bridge's number, 0..fleet_size-1 (the next region's
                                   # from fleet_size on): phase-locks refreshes, so the
                                   # fleet's calls arrive at an even rate
      fleet_size: 10000            # bridges sharing the clouds' quotas: each gets 1/N
      scope_rates:                 # or a scope's own per-bridge rate (calls/s)
        "aws_sts 111122223333 us-east-1": 0.05
      coalesce: true               # identical exchanges of several targets share one call
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from bridge.schema import Section

MAX_FLEET = 10_000_000
MAX_INDEX = 1 << 40
MAX_RATE = 1_000_000.0
_SCOPE = re.compile(r"[a-z][a-z0-9_]* [A-Za-z0-9._:-]+( [A-Za-z0-9._:-]+)*")


@dataclass(frozen=True, slots=True)
class FleetConfig:
    node_id: str = ""  # empty: NODE_NAME or the host name
    node_index: int | None = None  # set: refreshes phase-locked (`spread.Spread.phase`)
    fleet_size: int = 1
    scope_rates: Mapping[str, float] = field(default_factory=dict)
    coalesce: bool = False


def read_fleet(refresh: Section) -> FleetConfig:
    """The fleet keys of the `refresh` section (every problem recorded with its key)."""
    node_id = refresh.get("node_id", str, "", check=_check_node_id)
    fleet_size = refresh.get("fleet_size", int, 1, check=lambda v: None if 1 <= v <= MAX_FLEET
                             else f"must be 1..{MAX_FLEET} (the number of bridges sharing "
                             "the clouds' quotas)")
    node_index: int | None = None
    if refresh.raw("node_index") is not None:
        node_index = refresh.get("node_index", int, 0, check=_check_node_index)
    coalesce = refresh.get("coalesce", bool, False)
    rates: dict[str, float] = {}
    raw = refresh.raw("scope_rates")
    if raw is not None and not isinstance(raw, dict):
        refresh.error("scope_rates", f"expected a mapping of quota scope to calls per "
                      f"second, got {type(raw).__name__}")
    elif isinstance(raw, dict):
        section = refresh.section("scope_rates")
        for scope in raw:
            if not isinstance(scope, str) or not _SCOPE.fullmatch(scope):
                section.error(str(scope), "is not a quota scope (`<service> <account or "
                              "project> [<region>]`, e.g. `aws_sts 111122223333 us-east-1`, "
                              "`gcp_sts 123456`)")
                section.raw(str(scope))
                continue
            rate = section.get(scope, float, 0.0, check=_check_rate)
            if rate > 0:
                rates[scope] = rate
        section.finish()
    return FleetConfig(node_id=node_id, node_index=node_index, fleet_size=fleet_size,
                       scope_rates=rates, coalesce=coalesce)


def _check_rate(v: float) -> str | None:
    if not math.isfinite(v) or v <= 0 or v > MAX_RATE:
        return f"must be a number of calls per second above 0 and at most {MAX_RATE:.0f}"
    return None


def _check_node_index(v: int) -> str | None:
    if not 0 <= v < MAX_INDEX:
        return (f"must be a whole number 0..{MAX_INDEX - 1}: this bridge's number, "
                "0..fleet_size-1 among the bridges counted by refresh.fleet_size (then "
                "fleet_size.. for the next region's)")
    return None


def _check_node_id(v: str) -> str | None:
    if not v.strip() or len(v) > 253 or not v.isprintable():
        return "must be a non-empty printable name of at most 253 characters (the node's)"
    return None
