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

Independent draws cannot beat chance: a scope's per-second count of a fleet's calls is
Poisson, its peak twice its mean at a few dozen calls a second. A fleet whose nodes are
numbered (`refresh.node_index`) can: each target is *phase-locked* to the wall clock
(`Policy.locked_refresh`), and the phases of a *class* of targets (the same first quota
scope and lifetime) across the fleet are the points of one lattice, every point taken
once, so each scope sees evenly spaced calls. Nodes are numbered in blocks of
`refresh.fleet_size` (a region's bridges, which share its regional quotas); the blocks'
lattices are offset by a van der Corput fraction so that they interleave on a global
scope (GCP's project).
"""

from __future__ import annotations

import functools
import hashlib
import math
import os
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from bridge.refresh.policy import Policy

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
    """The draws of one bridge: per target, the n-th is `frac(seed + n * GOLDEN)`.

    With a node `index` (and `nodes`, the bridges numbered together), a fixed phase per
    target instead: node a's r-th target of a class of c sits at
    `(a * c + r * q) / (c * nodes)` of the period (`step`): each member's points over
    the fleet are an exact lattice, the class's too, and a node's own targets of the
    class are 1/c apart. `order` lists the targets (`Locked`); one not in it, such as
    a workload's, takes its name's seed."""

    def __init__(self, node: str, *, index: int | None = None, nodes: int = 1,
                 order: Sequence[Locked] = ()) -> None:
        self.node = node
        self.index = index
        self.nodes = max(1, nodes)
        # target: rank, size, offset, and the seed of its lifetime (its period's)
        self._classes: dict[str, tuple[int, int, float, float]] = {}
        # A class: the targets whose first hop calls the same scope at the same lifetime
        # (a node's are 1/c apart: they never wait for each other's budget tokens).
        members: dict[tuple[str, float | None], list[Locked]] = {}
        for t in order:
            members.setdefault((t.scopes[0] if t.scopes else "", t.lifetime), []).append(t)
        for (scope, lifetime), group in members.items():
            offset = seed("", f"{scope}\0{lifetime}")
            # Chains first, those with the same later scopes together, on the ranks
            # spread apart: a later scope that only some members call sees their
            # points spread over the period too.
            ordered = sorted(group, key=lambda t: (not t.scopes[1:], tuple(t.scopes[1:])))
            period = seed("", str(lifetime))
            for rank, t in zip(spread_ranks(len(group)), ordered, strict=True):
                self._classes[t.name] = (rank, len(group), offset, period)
        self._seeds: dict[str, float] = {}
        self._counts: dict[str, int] = {}

    def phase(self, target: str) -> float | None:
        """The target's phase in the lock period, or None when the node has no index."""
        if self.index is None:
            return None
        rank, size, offset, period = self._classes.get(
            target, (0, 1, seed("", target), seed("", target)))
        block, i = divmod(self.index, self.nodes)
        n = self.nodes
        # Node i's place in the lattice, dealt by a multiplier per period: classes of
        # one period keep the same distance on every node (if they meet, they meet
        # everywhere, shifted alike), classes of two periods meet on scattered nodes.
        a = i * shuffle(period, n) % n
        q = step(n, size)
        # Block b (`index = b * nodes + i`: the next region's bridges) is shifted by
        # b's van der Corput fraction of half a member's and half a class's spacing, so
        # that blocks sharing a global scope interleave.
        shift = van_der_corput(block) * (size + 1) / (2 * size)
        return ((a * size + rank * q) / (size * n) + shift / n + offset) % 1.0

    def refresh_in(self, policy: Policy, target: str, *, issued_at: float,
                   expires_at: float, now: float, wall_offset: float = 0.0) -> float:
        """Seconds from `now` until `target`'s credential is refreshed: at its phase when
        the node is numbered, else at the next draw's point of its safe window."""
        phase = self.phase(target)
        if phase is not None:
            return policy.locked_refresh(issued_at=issued_at, expires_at=expires_at, now=now,
                                         phase=phase, wall_offset=wall_offset)
        return policy.spread_refresh(issued_at=issued_at, expires_at=expires_at, now=now,
                                     draw=self.draw(target))

    def resume_in(self, policy: Policy, target: str, *, expires_at: float,
                  now: float) -> float:
        """Seconds from `now` until a credential a previous run left is replaced: within
        what is left of its safe window (its lifetime, and so its lock period, is not
        known: the refresh after this one is on the phase again)."""
        phase = self.phase(target)
        return policy.resume_refresh(expires_at=expires_at, now=now,
                                     draw=self.draw(target) if phase is None else phase)

    def draw(self, target: str) -> float:
        """The next draw in [0, 1) for `target` (each call moves its sequence on)."""
        s = self._seeds.get(target)
        if s is None:
            s = self._seeds[target] = seed(self.node, target)
        n = self._counts.get(target, 0)
        self._counts[target] = n + 1
        return (s + n * GOLDEN) % 1.0


@functools.cache
def shuffle(offset: float, nodes: int) -> int:
    """A class's multiplier of node numbers, prime to `nodes` (a permutation of them),
    fixed by the class's offset."""
    h = 1 + int(offset * (nodes - 1)) if nodes > 1 else 1
    while math.gcd(h, nodes) != 1:
        h = h % nodes + 1
    return h


def spread_ranks(size: int) -> list[int]:
    """0..size-1 in bit-reversed order (0, 4, 2, 6, 1, ... for 8): any run of them from
    the start is spread over the whole range."""
    bits = max(1, (size - 1).bit_length())
    return [r for r in (int(van_der_corput(k) * (1 << bits)) for k in range(1 << bits))
            if r < size]


def van_der_corput(n: int) -> float:
    """n's binary digits mirrored after the point: 0, 1/2, 1/4, 3/4, 1/8, ..."""
    x, unit = 0.0, 0.5
    while n:
        n, bit = divmod(n, 2)
        x += bit * unit
        unit /= 2
    return x


def step(nodes: int, size: int) -> int:
    """The rank step q of a class of `size` over `nodes`: the least q >= nodes prime to
    `size`. Node a's r-th member sits at `(a * size + r * q) / (size * nodes)`: a
    member's points over the fleet are the `nodes`-point lattice (shifted by r q), the
    class's are every point of the `size * nodes`-point one once (q prime to size),
    and a node's own members are about 1 / size apart."""
    q = nodes
    while math.gcd(q, size) != 1:
        q += 1
    return q


@dataclass(frozen=True, slots=True)
class Locked:
    """What the phase lock needs of a target: its name, its hops' quota scopes, and its
    credential's configured lifetime (None: the service picks). The targets of a node
    with the same first scope and lifetime are a *class*: they call that scope at the
    same period."""

    name: str
    scopes: Sequence[str]
    lifetime: float | None
