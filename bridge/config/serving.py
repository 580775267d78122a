"""The serving half of the config: the gRPC API, caller authorization, and which
cloud-metadata endpoints listen where (each endpoint's own keys are its cloud's)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from bridge.clouds import Target, endpoints
from bridge.schema import (
    Section,
    check_audience,
    check_loopback_address,
    check_spiffe_id,
    check_unix_uri,
    clip,
)

DEFAULT_GRPC_SOCKET = "unix:///run/spiffe-bridge/bridge.sock"
DEFAULT_CALLER_AUDIENCE = "spiffe-bridge"


@dataclass(frozen=True, slots=True)
class GrpcConfig:
    """The credential API: a unix socket (file permissions are the first gate), an
    optional loopback TCP port, and the audience callers' JWT-SVIDs must carry."""

    socket: str = DEFAULT_GRPC_SOCKET
    socket_mode: int = 0o660
    tcp_address: str | None = None
    caller_audience: str = DEFAULT_CALLER_AUDIENCE
    max_concurrent_rpcs: int = 256
    max_watchers: int = 1024
    shutdown_grace: float = 5.0
    reader_socket: bool = True  # credential files beside the socket (`serving.reader`)


@dataclass(frozen=True, slots=True)
class MetadataConfig:
    """`metadata.<key>` sections as their endpoints read them (key -> that config)."""

    endpoints: tuple[tuple[str, object], ...] = ()

    def get(self, key: str) -> object | None:
        return next((c for k, c in self.endpoints if k == key), None)


def read_grpc(root: Section) -> GrpcConfig:
    g = root.section("grpc")
    socket = g.get("socket", str, DEFAULT_GRPC_SOCKET, check=check_unix_uri)
    mode = _read_mode(g)
    tcp = g.get("tcp_address", str, "", check=check_loopback_address) or None
    audience = g.get("caller_audience", str, DEFAULT_CALLER_AUDIENCE, check=check_audience)
    rpcs = g.get("max_concurrent_rpcs", int, 256,
                 check=lambda v: None if 1 <= v <= 100_000 else "must be 1..100000")
    watchers = g.get("max_watchers", int, 1024,
                     check=lambda v: None if 1 <= v <= 100_000 else "must be 1..100000")
    grace = g.duration("shutdown_grace", 5.0, minimum=0.0, maximum=300.0)
    reader = g.get("reader_socket", bool, True)
    g.finish()
    return GrpcConfig(socket=socket, socket_mode=mode, tcp_address=tcp,
                      caller_audience=audience, max_concurrent_rpcs=rpcs,
                      max_watchers=watchers, shutdown_grace=grace, reader_socket=reader)


def _read_mode(g: Section) -> int:
    value = g.raw("socket_mode")
    if value is None:
        return 0o660
    if isinstance(value, str) and re.fullmatch(r"0?[0-7]{3}", value, re.ASCII):
        mode = int(value, 8)
    elif isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 0o777:
        mode = value  # YAML 1.1 reads an unquoted 0660 as octal already
    else:
        g.error("socket_mode", f"{clip(str(value))} is not a file mode: write it quoted, "
                "in octal, e.g. \"0660\"")
        return 0o660
    if mode & 0o600 != 0o600:
        g.error("socket_mode", f"{mode:04o} must give the bridge's own user read and write")
    return mode


def read_metadata(root: Section, directory: str) -> MetadataConfig:
    """Each `metadata.<key>` section, read by the endpoint that owns the key."""
    m = root.section("metadata")
    read: list[tuple[str, object]] = []
    for key, (_, endpoint) in endpoints().items():
        if not m.has(key):
            m.raw(key)
            continue
        section = m.section(key)
        config = endpoint.read(section, directory=directory)
        section.finish()
        if config is not None:
            read.append((key, config))
    m.finish()
    return MetadataConfig(endpoints=tuple(read))


def read_allowed_callers(s: Section) -> tuple[str, ...]:
    """`allowed_callers`: SPIFFE IDs, exact or with a trailing `/*` (a path prefix)."""
    callers = s.strings("allowed_callers")
    if s.has("allowed_callers") and not callers:
        s.error("allowed_callers", "is empty: list callers, or remove the key to leave "
                "access to the socket's file permissions")
    for i, caller in enumerate(callers):
        base = caller[:-2] if caller.endswith("/*") else caller
        if message := check_spiffe_id(base):
            s.problems.add(f"{s.key('allowed_callers')}[{i}]",
                           f"{message}; a trailing /* matches every ID under a path")
    return tuple(callers)


def read_serve(s: Section) -> tuple[str, ...]:
    """`serve`: which metadata endpoints hand this target out (opt-in)."""
    known = tuple(endpoints())
    kinds = s.strings("serve")
    for i, kind in enumerate(kinds):
        if kind not in known:
            s.problems.add(f"{s.key('serve')}[{i}]", f"{clip(kind)} is not one of "
                           f"{', '.join(known)}")
    if len(set(kinds)) != len(kinds):
        s.error("serve", "lists an endpoint twice")
    return tuple(k for k in kinds if k in known)


def check_serving(root: Section, grpc: GrpcConfig, metadata: MetadataConfig,
                  targets: Sequence[tuple[str, Target]], *,
                  rule_served: set[tuple[str, str]] | None = None) -> None:
    """Cross-section rules for serving: each endpoint has its listener and a target it
    can serve, single-identity endpoints serve one, and nothing widens access past
    `allowed_callers`."""
    for key, (_, endpoint) in endpoints().items():
        listener = metadata.get(key)
        serving = [(path, t) for path, t in targets if key in t.serve]
        for path, t in serving:
            if listener is None:
                root.problems.add(f"{path}.serve", f"serves {key} but `metadata.{key}` "
                                  "is not configured")
            if why := endpoint.serve_problem(t):
                root.problems.add(f"{path}.serve", why)
            if t.allowed_callers:
                root.problems.add(f"{path}.serve", "a target with `allowed_callers` is "
                                  "served over gRPC only: metadata endpoints cannot check "
                                  "a caller's SPIFFE ID")
        if endpoint.single and len(serving) > 1:
            root.problems.add(f"{serving[1][0]}.serve", f"{key} serves one identity, and "
                              f"{serving[0][1].name} already has it")
        by_rules = sorted(r for k, r in rule_served or () if k == key)
        if by_rules and serving:
            root.problems.add(f"{serving[0][0]}.serve", f"{key} serves each caller its own "
                              f"identity (workload target {by_rules[0]}): a configured "
                              "target cannot share it")
        if listener is not None and not serving and not by_rules:
            root.error(f"metadata.{key}", "no target lists it in `serve`")
    if grpc.tcp_address and any(not t.allowed_callers for _, t in targets):
        root.error("grpc.tcp_address", "every local user can connect over TCP: give every "
                   "target `allowed_callers` first")
    if grpc.socket_mode & 0o007 and any(not t.allowed_callers for _, t in targets):
        root.error("grpc.socket_mode", f"{grpc.socket_mode:04o} opens the socket to every "
                   "user: give every target `allowed_callers` first")


def exposure(metadata: MetadataConfig, targets: Sequence[Target], *,
             per_caller: frozenset[str] = frozenset()) -> list[str]:
    """What each configured metadata endpoint hands out, and to whom (`check` prints
    it: serving a credential over loopback HTTP is a choice an operator should see)."""
    lines = []
    for key, (_, endpoint) in endpoints().items():
        listener = metadata.get(key)
        if listener is not None and key not in per_caller:  # those: workload targets
            served = [t.name for t in targets if key in t.serve]
            lines.append(endpoint.exposure(listener, served))
    return lines
