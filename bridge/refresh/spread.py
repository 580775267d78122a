"""Where in its safe window each refresh lands: deterministic draws per node and target.

A fleet of bridges started together (a cold start, a rolling restart, the end of an
outage) holds credentials issued together; random jitter around half-life keeps them
together, and a window that clamps the jitter away (AWS's 15-25 min sessions) keeps them
in lockstep for ever. Instead each (node, target) gets a seed from a hash of both names,
and its n-th refresh lands at `frac(seed + n * golden ratio)` of the safe window: the
fleet's refreshes cover the whole window from the first one on, each target's average
is the window's middle, and a restart of the same node draws the same sequence (a
restart does not re-align anything). The node is `refresh.node_id`, by default the
Kubernetes node (`NODE_NAME`, from the downward API) or the host name: a DaemonSet pod's
name changes when it is replaced, the node's does not.
"""

from __future__ import annotations

import hashlib
import os
import socket
from collections.abc import Mapping

GOLDEN = 0.6180339887498949  # the fractional part of the golden ratio: a low-discrepancy step


def default_node_id(env: Mapping[str, str] | None = None) -> str:
    """`NODE_NAME` when set (Kubernetes downward API), else this host's name."""
    env = os.environ if env is None else env
    return env.get("NODE_NAME") or socket.gethostname() or "localhost"


def seed(node: str, name: str) -> float:
    """A fraction in [0, 1) fixed by `node` and `name` (a target, or a quota scope)."""
    digest = hashlib.sha256(f"{node}\0{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0 ** 64


class Spread:
    """The draws of one bridge: per target, the n-th is `frac(seed + n * GOLDEN)`."""

    def __init__(self, node: str) -> None:
        self.node = node
        self._seeds: dict[str, float] = {}
        self._counts: dict[str, int] = {}

    def draw(self, target: str) -> float:
        """The next draw in [0, 1) for `target` (each call moves its sequence on)."""
        s = self._seeds.get(target)
        if s is None:
            s = self._seeds[target] = seed(self.node, target)
        n = self._counts.get(target, 0)
        self._counts[target] = n + 1
        return (s + n * GOLDEN) % 1.0
