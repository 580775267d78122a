"""`targets[]`: one section per cloud identity, its first hop in a `<cloud>:` section
and further hops in `chain:`, each read by its cloud; the chain rules are
`bridge.clouds.chain`'s."""

from __future__ import annotations

import re

from bridge.clouds import CLOUDS, HopConfig, cloud_of
from bridge.clouds.chain import plan
from bridge.config.schema import TargetConfig
from bridge.config.serving import read_allowed_callers, read_serve
from bridge.schema import Section, check_audience, check_spiffe_id, clip

# fullmatch + ASCII: `$` would accept a trailing newline, `\w`/`\d` would accept Unicode.
_NAME = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?", re.ASCII)


def read_target(s: Section) -> TargetConfig | None:
    name = s.get("name", str, "", required=True, check=_check_name)
    spiffe_id = s.get("spiffe_id", str, "", check=check_spiffe_id) or None
    jwt_file = s.get("jwt_file", bool, False)
    allowed_callers = read_allowed_callers(s)
    serve = read_serve(s)
    present = [c for c in CLOUDS.values() if s.has(c.name)]
    for extra in present[1:]:
        s.error(extra.name, f"a target starts with one cloud: use one of "
                f"{_cloud_keys()}, and `chain` for further hops")
    hops: list[HopConfig | None] = []
    if present:
        section = s.section(present[0].name)
        hops += present[0].read_section(section)
        section.finish()
    else:
        s.error(next(iter(CLOUDS)), "is required: a target needs a cloud section "
                f"({_cloud_keys(' or ')})")
    for extra in present[1:]:
        s.raw(extra.name)
    hops += [_read_chain_hop(c) for c in s.items("chain")]
    first = hops[0] if hops else None
    audience = s.get("audience", str, first.audience if first else "", check=check_audience)
    complete = [h for h in hops if h is not None]
    if first is not None and len(complete) == len(hops):
        _check_chain(s, complete, jwt_file=jwt_file)
    s.finish()
    if not name or first is None or len(complete) != len(hops):
        return None
    return TargetConfig(name=name, audience=audience, hops=tuple(complete),
                        spiffe_id=spiffe_id, jwt_file=jwt_file,
                        allowed_callers=allowed_callers, serve=serve)


def _read_chain_hop(c: Section) -> HopConfig | None:
    """One `chain:` element: a mapping with exactly one cloud section."""
    present = [cloud for cloud in CLOUDS.values() if c.has(cloud.name)]
    hop: HopConfig | None = None
    if len(present) != 1:
        c.problems.add(c.path, f"each chain hop needs exactly one of {_cloud_keys(' or ')}")
        for cloud in CLOUDS.values():
            c.raw(cloud.name)
    else:
        section = c.section(present[0].name)
        hop = present[0].read_hop(section)
        section.finish()
    c.finish()
    return hop


def _check_chain(s: Section, hops: list[HopConfig], *, jwt_file: bool) -> None:
    _, problems = plan(hops)
    for problem in problems:
        s.error("chain", problem)
    for position, hop in enumerate(hops):
        for key, message in cloud_of(hop).hop_problems(hop, position=position,
                                                        jwt_file=jwt_file):
            s.error(key, message)


def check_unique_names(root: Section, named: list[tuple[str, object]]) -> None:
    """Names key files, metric labels and gRPC requests, so they must be unique."""
    seen: dict[str, str] = {}
    for path, name in named:
        if not isinstance(name, str):
            continue
        if name in seen:
            root.problems.add(f"{path}.name", f"duplicate target name {clip(name)} "
                              f"(first used at {seen[name]})")
        seen.setdefault(name, path)


def _check_name(v: str) -> str | None:
    if _NAME.fullmatch(v):
        return None
    return (f"{clip(v)} is not a valid target name: use 1-63 of [a-z0-9-], "
            "starting and ending with a letter or digit")


def _cloud_keys(sep: str = ", ") -> str:
    return sep.join(f"`{name}`" for name in CLOUDS)
