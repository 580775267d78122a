"""The chain rules, in one place: what may follow what, and how each hop is fed.

A target is a chain of hops: the first is fed the JWT-SVID; each next one is fed by
the one before, either with its own material (`Link.NATIVE`: an AWS session for
AssumeRole or for GCP's `aws4_request` exchange) or with an ID token that the one
before mints for its audience (`Link.TOKEN`: a Google ID token for AWS). Each cloud
says how its hops may be fed (`Cloud.link`) and whether its hops can mint
(`Cloud.mint_problem`); `plan` applies those rules, and both the config check and the
chain builder go through it, so a chain that loads is a chain that builds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from bridge.clouds import CloudSession, Hop, HopConfig, Link, LinkProblem, cloud_of
from bridge.clouds.base import SourceRules

MAX_CHAIN = 5


@dataclass(frozen=True, slots=True)
class ChainProblem:
    """A rule a chain breaks: at hop `hop` (0-based; None: the chain as a whole), and
    the hop's own `key` when the rule is about one (the config check names the path)."""

    hop: int | None
    message: str
    key: str | None = None

    def __str__(self) -> str:
        return self.message if self.hop is None else f"hop {self.hop + 1} of the chain: " \
            f"{self.message}"


@dataclass(frozen=True, slots=True)
class Step:
    """One configured hop and how it is fed."""

    hop: HopConfig
    link: Link


def plan(hops: Sequence[HopConfig], source: str = "jwt"
         ) -> tuple[list[Step], list[ChainProblem]]:
    """The steps of a chain fed by `source` (jwt, x509), and every rule it breaks
    (empty when it may run)."""
    problems: list[ChainProblem] = []
    if len(hops) > MAX_CHAIN:
        problems.append(ChainProblem(None, f"at most {MAX_CHAIN} hops in all, got {len(hops)}"))
    steps: list[Step] = []
    prev: HopConfig | None = None
    for i, hop in enumerate(hops):
        cloud = cloud_of(hop)
        link = cloud.link(prev, hop)
        if i == 0 and (why := _source_problem(hop, source)):
            problems.append(ChainProblem(i, why))
        if isinstance(link, LinkProblem):
            problems.append(ChainProblem(i, link.message, link.key))
        elif link is Link.SVID and source == "x509":
            steps.append(Step(hop, Link.X509))
        elif link is Link.TOKEN and prev is not None:
            minter = cloud_of(prev)
            if why := minter.mint_problem(prev):
                problems.append(ChainProblem(
                    i, f"an {cloud.title} hop after {minter.title} {why}"))
            steps.append(Step(hop, link))
        else:
            steps.append(Step(hop, link))
        prev = hop
    return steps, problems


def _source_problem(hop: HopConfig, source: str) -> str | None:
    cloud = cloud_of(hop)
    if isinstance(cloud, SourceRules):
        return cloud.source_problem(hop, source)
    return f"{cloud.title} hops cannot take an X.509-SVID" if source == "x509" else None


def build_hops(hops: Sequence[HopConfig], sessions: Mapping[str, CloudSession],
               source: str = "jwt") -> list[Hop]:
    """The runtime hops of a chain fed by `source`, in order; `sessions` hold one per
    cloud it uses.

    Raises ValueError for a chain `plan` refuses (the config loader refuses it first).
    """
    steps, problems = plan(hops, source)
    if problems:
        raise ValueError("; ".join(map(str, problems)))
    runtime: list[Hop] = []
    for i, step in enumerate(steps):
        if step.link is Link.TOKEN:
            prev = hops[i - 1]
            runtime += sessions[prev.cloud].mint(prev, audience=step.hop.audience)
        runtime += sessions[step.hop.cloud].build(step.hop, link=step.link, earlier=hops[:i])
    return runtime
