"""The serving half of the config: the gRPC API, caller authorization and the
cloud-metadata endpoints. Split from `config` so each module stays one concept; the
checks share `config_checks` and report through the same `Section` reader.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from bridge.config_checks import (
    DEFAULT_GRPC_SOCKET,
    check_abs_path,
    check_audience,
    check_host_port,
    check_spiffe_id,
    check_unix_uri,
    clip,
    is_loopback_host,
)
from bridge.config_reader import Section

DEFAULT_CALLER_AUDIENCE = "spiffe-bridge"
SERVE_KINDS = ("container", "imds", "gce")
_PROJECT_ID = re.compile(r"[a-z][a-z0-9-]{4,28}[a-z0-9]", re.ASCII)


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


@dataclass(frozen=True, slots=True)
class ContainerEndpoint:
    """AWS container credentials provider (`AWS_CONTAINER_CREDENTIALS_FULL_URI`)."""

    address: str
    token_file: Path


@dataclass(frozen=True, slots=True)
class Listener:
    """An IMDSv2 or GCE metadata emulation listener (one target each)."""

    address: str
    project_id: str | None = None


@dataclass(frozen=True, slots=True)
class MetadataConfig:
    container: ContainerEndpoint | None = None
    imds: Listener | None = None
    gce: Listener | None = None


def read_grpc(root: Section) -> GrpcConfig:
    g = root.section("grpc")
    socket = g.get("socket", str, DEFAULT_GRPC_SOCKET, check=check_unix_uri)
    mode = _read_mode(g)
    tcp = g.get("tcp_address", str, "", check=_check_loopback_address) or None
    audience = g.get("caller_audience", str, DEFAULT_CALLER_AUDIENCE, check=check_audience)
    rpcs = g.get("max_concurrent_rpcs", int, 256,
                 check=lambda v: None if 1 <= v <= 100_000 else "must be 1..100000")
    watchers = g.get("max_watchers", int, 1024,
                     check=lambda v: None if 1 <= v <= 100_000 else "must be 1..100000")
    grace = g.duration("shutdown_grace", 5.0, minimum=0.0, maximum=300.0)
    g.finish()
    return GrpcConfig(socket=socket, socket_mode=mode, tcp_address=tcp,
                      caller_audience=audience, max_concurrent_rpcs=rpcs,
                      max_watchers=watchers, shutdown_grace=grace)


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
    m = root.section("metadata")
    container = None
    if m.has("container"):
        c = m.section("container")
        address = c.get("address", str, "", required=True, check=_check_loopback_address)
        default_file = str(Path(directory or "/") / "container.token")
        token_file = c.get("token_file", str, default_file, check=check_abs_path)
        c.finish()
        if address:
            container = ContainerEndpoint(address=address, token_file=Path(token_file))
    imds = _read_listener(m, "imds", project=False)
    gce = _read_listener(m, "gce", project=True)
    m.finish()
    return MetadataConfig(container=container, imds=imds, gce=gce)


def _read_listener(m: Section, name: str, *, project: bool) -> Listener | None:
    if not m.has(name):
        m.raw(name)
        return None
    s = m.section(name)
    address = s.get("address", str, "", required=True, check=_check_loopback_address)
    project_id = (s.get("project_id", str, "", check=_check_project_id) or None
                  ) if project else None
    s.finish()
    return Listener(address=address, project_id=project_id) if address else None


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
    kinds = s.strings("serve")
    for i, kind in enumerate(kinds):
        if kind not in SERVE_KINDS:
            s.problems.add(f"{s.key('serve')}[{i}]", f"{clip(kind)} is not one of "
                           f"{', '.join(SERVE_KINDS)}")
    if len(set(kinds)) != len(kinds):
        s.error("serve", "lists an endpoint twice")
    return tuple(k for k in kinds if k in SERVE_KINDS)


def allows(pattern: str, caller: str) -> bool:
    """Whether `caller` (a SPIFFE ID) matches one `allowed_callers` entry."""
    if pattern.endswith("/*"):
        return caller.startswith(pattern[:-1]) and len(caller) > len(pattern) - 1
    return caller == pattern


def _check_loopback_address(v: str) -> str | None:
    if message := check_host_port(v):
        return message
    host = v.rpartition(":")[0]
    if not is_loopback_host(host):
        return f"{clip(v)} must be a loopback address (127.0.0.1, [::1] or localhost)"
    return None



def _check_project_id(v: str) -> str | None:
    if _PROJECT_ID.fullmatch(v):
        return None
    return f"{clip(v)} is not a Google Cloud project ID (6-30 of [a-z0-9-])"
