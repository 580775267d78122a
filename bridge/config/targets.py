"""`targets[]`: one section per cloud identity, its first hop in a `<cloud>:` section
and further hops in `chain:`, each read by its cloud; the chain rules are
`bridge.clouds.chain`'s."""

from __future__ import annotations

import re

from bridge.clouds import CLOUDS, HopConfig, cloud_of
from bridge.clouds.base import SOURCES
from bridge.clouds.chain import plan
from bridge.config.schema import TargetConfig
from bridge.config.serving import read_allowed_callers, read_serve
from bridge.schema import Section, check_audience, check_spiffe_id, clip

# fullmatch + ASCII: `$` would accept a trailing newline, `\w`/`\d` would accept Unicode.
_NAME = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?", re.ASCII)


def read_target(s: Section) -> TargetConfig | None:
    name = s.get("name", str, "", required=True, check=_check_name)
    spiffe_id = s.get("spiffe_id", str, "", check=check_spiffe_id) or None
    source = s.get("source", str, "jwt", check=_check_source)
    jwt_file = s.get("jwt_file", bool, False)
    x509_files = s.get("x509_files", bool, False)
    if jwt_file and source == "x509":
        s.error("jwt_file", "writes the JWT-SVID of a `source: jwt` target; this target's "
                "source is x509 (use `x509_files: true` for its certificate and key)")
    if x509_files and source != "x509":
        s.error("x509_files", "writes the X.509-SVID of a `source: x509` target")
    allowed_callers = read_allowed_callers(s)
    serve = read_serve(s)
    present = [c for c in CLOUDS.values() if s.has(c.name)]
    if len(present) != 1:  # one message for both mistakes, at the target
        found = ", ".join(f"`{c.name}`" for c in present)
        s.problems.add(s.path, f"a target needs exactly one of {_cloud_keys()} " + (
            f"(found {found}); further hops go in `chain`" if found else "(found none)"))
    hops: list[HopConfig | None] = []
    paths: list[str] = []  # each hop's own mapping, relative to the target
    if len(present) == 1:
        cloud = present[0].name
        section = s.section(cloud)
        hops += present[0].read_section(section)
        section.finish()
        # a section's further hops are its `chain` shorthand (aws.chain)
        paths += [cloud] + [f"{cloud}.chain[{k}]" for k in range(len(hops) - 1)]
    for extra in present if len(present) > 1 else ():
        s.raw(extra.name)  # said above; not unknown keys too
    for j, c in enumerate(s.items("chain")):
        hop = _read_chain_hop(c)
        hops.append(hop)
        paths.append(f"chain[{j}].{hop.cloud}" if hop is not None else f"chain[{j}]")
    first = hops[0] if hops else None
    audience = s.get("audience", str, first.audience if first else "", check=check_audience)
    complete = [h for h in hops if h is not None]
    if first is not None and len(complete) == len(hops):
        _check_chain(s, complete, paths, jwt_file=jwt_file, source=source)
    s.finish()
    if not name or first is None or len(complete) != len(hops):
        return None
    return TargetConfig(name=name, audience=audience, hops=tuple(complete),
                        spiffe_id=spiffe_id, jwt_file=jwt_file,
                        allowed_callers=allowed_callers, serve=serve,
                        source=source if source in SOURCES else "jwt",
                        x509_files=x509_files)


def _read_chain_hop(c: Section) -> HopConfig | None:
    """One `chain:` element: a mapping with exactly one cloud section."""
    present = [cloud for cloud in CLOUDS.values() if c.has(cloud.name)]
    hop: HopConfig | None = None
    if len(present) != 1:
        c.problems.add(c.path, f"each chain hop needs exactly one of {_cloud_keys()}")
        for cloud in CLOUDS.values():
            c.raw(cloud.name)
    else:
        section = c.section(present[0].name)
        hop = present[0].read_hop(section)
        section.finish()
    c.finish()
    return hop


def _check_chain(s: Section, hops: list[HopConfig], paths: list[str], *,
                 jwt_file: bool, source: str = "jwt") -> None:
    """Each rule the chain breaks, at the hop (and key) it is about."""
    _, problems = plan(hops, source if source in SOURCES else "jwt")
    for problem in problems:
        if problem.hop is None:
            s.error("chain", problem.message)
        else:
            s.error(".".join(filter(None, (paths[problem.hop], problem.key))), problem.message)
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


def valid_name_problem(v: str) -> str | None:
    """Why `v` is not a valid target (or workload target) name, or None."""
    return _check_name(v)


def _check_source(v: str) -> str | None:
    if v in SOURCES:
        return None
    return f"{clip(v)} is not a source: use one of {', '.join(SOURCES)}"


def _check_name(v: str) -> str | None:
    if _NAME.fullmatch(v):
        return None
    return (f"{clip(v)} is not a valid target name: use 1-63 of [a-z0-9-], "
            "starting and ending with a letter or digit")


def _cloud_keys() -> str:
    """`aws`, `gcp` or `azure`."""
    names = [f"`{name}`" for name in CLOUDS]
    return f"{', '.join(names[:-1])} or {names[-1]}" if len(names) > 1 else names[0]
