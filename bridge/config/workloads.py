"""Per-workload identities: `broker:`, `workloads:` and `workload_targets[]`.

A workload target is a rule: a caller whose SPIFFE ID (attested by the SPIRE agent
through the Broker API) matches `match` gets the cloud identity of the rule's cloud
section, with the ID's `{placeholders}` rendered into it:

    workload_targets:
      - name: ns-sa-aws
        match: spiffe://example.org/ns/{namespace}/sa/{sa}
        aws: {role_arn: "arn:aws:iam::111122223333:role/{namespace}-{sa}", region: us-east-1}
        serve: {grpc: true, metadata: [imds]}

The cloud section and `chain:` are a target's (every hop kind and chain shape), read
by the same code: `check` reads them once with every placeholder as `x` (so a rule that
cannot work for anyone is a config error, at its key path), and each caller's rendering
is read again when it first asks; a rendered value that fails a hop's own checks is a
permanent failure for that caller only. A placeholder matches one path segment's
characters ([A-Za-z0-9._-]); one the cloud section uses must be in `match`.

Without `broker:` the rules run broker-less: a caller presents its own JWT-SVID for the
rule's audience (gRPC `authorization: Bearer`, the container endpoint's
`Authorization`), so IMDS and GCE, which carry no such token, cannot serve them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from bridge.clouds import CLOUDS, endpoints
from bridge.config.schema import TargetConfig
from bridge.config.targets import read_target, valid_name_problem
from bridge.errors import ConfigError
from bridge.schema import Problems, Section, check_spiffe_id, check_unix_uri, clip

_PLACEHOLDER = re.compile(r"\{([a-z_][a-z0-9_]{0,30})\}", re.ASCII)
_ANY_BRACE = re.compile(r"[{}]")
_SEGMENT_CHARS = "[A-Za-z0-9._-]+"
SAMPLE = "x"  # what `check` renders every placeholder as
_BODY_KEYS = ("audience", "chain")
DEFAULT_WORKLOAD_SOCKET = "unix:///run/spiffe-bridge/workload.sock"


@dataclass(frozen=True, slots=True)
class BrokerSection:
    """`broker:`, the agent's SPIFFE Broker API endpoint (see `sources.broker`)."""

    socket: str
    agent_id: str
    spiffe_id: str | None = None
    timeout: float = 5.0


@dataclass(frozen=True, slots=True)
class WorkloadsConfig:
    """`workloads:`: where workloads ask, and the lifecycle's bounds."""

    grpc_socket: str | None = None  # None: no gRPC for workloads
    socket_mode: int = 0o666  # every local process may ask for its *own* identity
    idle: float = 600.0  # drop a workload's credential after this long unasked
    max_identities: int = 256  # live (identity, rule) pairs at most
    request_timeout: float = 10.0  # a first request waits at most this (or its deadline)


@dataclass(frozen=True, slots=True)
class WorkloadRule:
    """One `workload_targets[]` element; `target_for` renders it for one caller."""

    name: str
    match: str
    placeholders: tuple[str, ...]
    serve_grpc: bool
    serve_metadata: tuple[str, ...]
    body: dict[str, Any] = field(repr=False, compare=False, hash=False)
    path: str = ""
    sample: TargetConfig | None = field(default=None, compare=False)

    @property
    def pattern(self) -> re.Pattern[str]:
        return _compile(self.match)

    def values(self, spiffe_id: str) -> dict[str, str] | None:
        """The placeholders' values when `spiffe_id` matches, else None."""
        found = self.pattern.fullmatch(spiffe_id)
        return dict(found.groupdict()) if found else None

    def target_for(self, values: dict[str, str]) -> TargetConfig:
        """The rule rendered for one caller, read as a target. Raises ConfigError (the
        rendered value fails a hop's own checks: permanent for that caller)."""
        problems = Problems()
        doc = {"name": self.name, **_render(self.body, values)}
        target = read_target(Section(doc, self.path, problems))
        if problems.items or target is None:
            raise ConfigError(problems.items)
        return target

    @property
    def audience(self) -> str:
        return self.sample.audience if self.sample is not None else ""


def read_broker(root: Section) -> BrokerSection | None:
    if not root.has("broker"):
        root.raw("broker")
        return None
    b = root.section("broker")
    socket = b.get("socket", str, "", required=True, check=_check_broker_socket)
    agent_id = b.get("agent_id", str, "", required=True, check=_check_agent_id)
    spiffe_id = b.get("spiffe_id", str, "", check=check_spiffe_id) or None
    timeout = b.duration("timeout", 5.0, minimum=1.0, maximum=120.0)
    b.finish()
    if not socket or not agent_id:
        return None
    return BrokerSection(socket=socket, agent_id=agent_id, spiffe_id=spiffe_id,
                         timeout=timeout)


def read_workloads(root: Section) -> WorkloadsConfig:
    w = root.section("workloads")
    grpc_socket = w.get("grpc_socket", str, "", check=check_unix_uri) or None
    mode = w.raw("socket_mode")
    socket_mode = 0o666
    if isinstance(mode, str) and re.fullmatch(r"0?[0-7]{3}", mode, re.ASCII):
        socket_mode = int(mode, 8)
    elif isinstance(mode, int) and not isinstance(mode, bool) and 0 <= mode <= 0o777:
        socket_mode = mode
    elif mode is not None:
        w.error("socket_mode", f"{clip(str(mode))} is not a file mode: write it quoted, in "
                "octal, e.g. \"0666\"")
    idle = w.duration("idle", 600.0, minimum=10.0, maximum=7 * 86400.0)
    bound = w.get("max_identities", int, 256,
                  check=lambda v: None if 1 <= v <= 100_000 else "must be 1..100000")
    request_timeout = w.duration("request_timeout", 10.0, minimum=1.0, maximum=120.0)
    w.finish()
    return WorkloadsConfig(grpc_socket=grpc_socket, socket_mode=socket_mode, idle=idle,
                           max_identities=bound, request_timeout=request_timeout)


def read_workload_rule(s: Section) -> WorkloadRule | None:
    name = s.get("name", str, "", required=True, check=valid_name_problem)
    match = s.get("match", str, "", required=True, check=check_match)
    serve_grpc, serve_metadata = _read_serve(s)
    body: dict[str, Any] = {}
    for key in (*CLOUDS, *_BODY_KEYS):
        value = s.raw(key)
        if value is not None:
            body[key] = value
    names = tuple(_PLACEHOLDER.findall(match)) if match else ()
    for path, text in _strings(body, s.path):
        for used in _PLACEHOLDER.findall(text):
            if match and used not in names:
                s.problems.add(path, f"uses {{{used}}}, which `match` does not define "
                               f"(it has {', '.join(names) or 'no placeholders'})")
        if _ANY_BRACE.search(_PLACEHOLDER.sub("", text)):
            s.problems.add(path, "a `{` or `}` that is not a {placeholder}")
    sample = None
    if name:
        # The rule's cloud section, read as a target with every placeholder as `x`.
        sample = read_target(Section({"name": name, **_render(body, dict.fromkeys(names, SAMPLE))},
                                     s.path, s.problems))
    s.finish()
    if not name or not match or sample is None:
        return None
    return WorkloadRule(name=name, match=match, placeholders=names, serve_grpc=serve_grpc,
                        serve_metadata=serve_metadata, body=body, path=s.path, sample=sample)


def check_rules(root: Section, rules: list[tuple[str, WorkloadRule]], *,
                broker: BrokerSection | None, workloads: WorkloadsConfig,
                target_names: set[str], metadata_keys: set[str]) -> None:
    """Cross rules: a broker to ask, somewhere to serve, unique names, endpoints set up."""
    if not rules:
        return
    seen: dict[str, str] = {}
    single: dict[str, str] = {}
    for path, rule in rules:
        if rule.name in seen or rule.name in target_names:
            root.problems.add(f"{path}.name", f"duplicate name {rule.name} (names are gRPC "
                              "keys and metric labels, shared with `targets`)")
        seen.setdefault(rule.name, path)
        if rule.serve_grpc and workloads.grpc_socket is None:
            root.problems.add(f"{path}.serve.grpc", "needs `workloads.grpc_socket`")
        for key in rule.serve_metadata:
            endpoint = endpoints()[key][1]
            if broker is None and key != "container":
                root.problems.add(f"{path}.serve.metadata", f"{key} needs `broker` (the "
                                  "SPIRE agent's SPIFFE Broker API endpoint, which attests "
                                  "each caller): without it a caller proves its identity "
                                  "with its own JWT-SVID, which only gRPC and the "
                                  "container endpoint carry")
            if key not in metadata_keys:
                root.problems.add(f"{path}.serve.metadata", f"serves {key} but "
                                  f"`metadata.{key}` is not configured")
            if rule.sample is not None and (why := endpoint.serve_problem(rule.sample)):
                root.problems.add(f"{path}.serve.metadata", why)
            if endpoint.single:
                if key in single:
                    root.problems.add(f"{path}.serve.metadata", f"{key} serves one identity "
                                      f"per caller, and rule {single[key]} already has it")
                single.setdefault(key, rule.name)


def check_match(v: str) -> str | None:
    """A SPIFFE ID whose path may hold {placeholders} (in the path only, each once)."""
    names = _PLACEHOLDER.findall(v)
    if len(set(names)) != len(names):
        return "uses a placeholder twice"
    plain = _PLACEHOLDER.sub(SAMPLE, v)
    if _ANY_BRACE.search(plain):
        return "a `{` or `}` that is not a {placeholder} ([a-z_][a-z0-9_]*)"
    if message := check_spiffe_id(plain):
        return message
    if "{" in v.removeprefix("spiffe://").split("/", 1)[0]:
        return "the trust domain cannot be a placeholder"
    return None


def _read_serve(s: Section) -> tuple[bool, tuple[str, ...]]:
    if not s.has("serve"):
        s.raw("serve")
        return True, ()
    v = s.section("serve")
    grpc = v.get("grpc", bool, False)
    known = tuple(endpoints())
    kinds = v.strings("metadata")
    for i, kind in enumerate(kinds):
        if kind not in known:
            v.problems.add(f"{v.key('metadata')}[{i}]", f"{clip(kind)} is not one of "
                           f"{', '.join(known)}")
    if len(set(kinds)) != len(kinds):
        v.error("metadata", "lists an endpoint twice")
    v.finish()
    if not grpc and not kinds:
        s.error("serve", "serves nothing: set `grpc: true` or list `metadata` endpoints")
    return grpc, tuple(k for k in kinds if k in known)


def _compile(template: str) -> re.Pattern[str]:
    parts: list[str] = []
    at = 0
    for m in _PLACEHOLDER.finditer(template):
        parts.append(re.escape(template[at:m.start()]))
        parts.append(f"(?P<{m.group(1)}>{_SEGMENT_CHARS})")
        at = m.end()
    parts.append(re.escape(template[at:]))
    return re.compile("".join(parts), re.ASCII)


def _render(value: Any, values: dict[str, str]) -> Any:
    if isinstance(value, str):
        return _PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), value)
    if isinstance(value, list):
        return [_render(v, values) for v in value]
    if isinstance(value, dict):
        return {k: _render(v, values) for k, v in value.items()}
    return value


def _strings(value: Any, path: str) -> list[tuple[str, str]]:
    """Every string in a YAML value with its key path."""
    if isinstance(value, str):
        return [(path, value)]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in _strings(v, f"{path}[{i}]")]
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in _strings(v, f"{path}.{k}")]
    return []


def _check_broker_socket(v: str) -> str | None:
    if v.startswith("tcp://"):
        return ("tcp:// is not supported: WorkloadPIDReference is a local reference "
                "(SPIRE refuses it over TCP unless allow_over_tcp)")
    return check_unix_uri(v)


def _check_agent_id(v: str) -> str | None:
    base = v[:-2] if v.endswith("/*") else v
    if message := check_spiffe_id(base):
        return f"{message}; a trailing /* matches every agent ID under a path"
    return None
