"""The configuration file: a typed, validated model of the YAML contract in DESIGN.md.

`load_config` reads the file and returns a `Config` or raises `ConfigError` carrying
every problem with its key path. Defaults < file < `SPIFFE_ENDPOINT_SOCKET` (only when
the file sets no socket): the precedence the SPIFFE spec asks of Workload API clients.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from pathlib import Path

from bridge.config.fleet import read_fleet
from bridge.config.schema import (
    DEFAULT_HTTP_ADDRESS,
    Config,
    OutputsConfig,
    RefreshConfig,
    WorkloadApiConfig,
)
from bridge.config.serving import check_serving, read_grpc, read_metadata
from bridge.config.targets import check_unique_names, read_target
from bridge.config.workloads import check_rules, read_broker, read_workload_rule, read_workloads
from bridge.errors import ConfigError, ConfigProblem
from bridge.schema import Problems, Section, check_abs_path, check_host_port, check_unix_uri
from bridge.schema.document import load_document


def load_config(path: str | Path, env: Mapping[str, str] | None = None) -> Config:
    """Read and validate a config file; raise ConfigError listing every problem."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([ConfigProblem("", f"cannot read {path}: {exc.strerror}")]) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError([ConfigProblem("", f"{path} is not UTF-8 text")]) from exc
    return parse_config(text, env=os.environ if env is None else env)


def file_warnings(path: str | Path) -> list[str]:
    """What is unsafe about the config file itself (not an error: the operator may have
    reasons), one line each: whoever can write it chooses which roles the bridge assumes
    and who may read them."""
    try:
        st = os.stat(path)
    except OSError:
        return []
    if st.st_mode & 0o022:
        who = " and ".join(w for bit, w in ((0o020, "group"), (0o002, "others"))
                           if st.st_mode & bit)
        return [f"{path} is writable by {who} (mode {stat.S_IMODE(st.st_mode):04o}): "
                "whoever can write it chooses the roles and callers; chmod go-w it"]
    return []


def parse_config(text: str, *, env: Mapping[str, str]) -> Config:
    """Validate YAML text against the contract; raise ConfigError listing every problem."""
    data, document_problems = load_document(text)
    if document_problems:
        raise ConfigError(document_problems)
    problems = Problems()
    if data is None:
        problems.add("", "the file is empty")
        raise ConfigError(problems.items)
    root = Section(data, "", problems)
    if not root.valid:
        raise ConfigError(problems.items)
    config = _read_root(root, env)
    if problems.items or config is None:
        raise ConfigError(problems.items)
    return config


def _read_root(root: Section, env: Mapping[str, str]) -> Config | None:
    wl = root.section("workload_api")
    socket = wl.get("socket", str, "", check=_check_workload_socket)
    if not wl.has("socket"):
        socket = env.get("SPIFFE_ENDPOINT_SOCKET", "")
        if not socket:
            root.error("workload_api.socket", "is required (or set SPIFFE_ENDPOINT_SOCKET)")
        elif message := _check_workload_socket(socket):
            root.error("workload_api.socket", f"from SPIFFE_ENDPOINT_SOCKET: {message}")
    timeout = wl.duration("timeout", 10.0, minimum=1.0, maximum=300.0)
    wl.finish()

    out = root.section("outputs")
    directory = out.get("directory", str, "", required=True, check=check_abs_path)
    allow_non_tmpfs = out.get("allow_non_tmpfs", bool, False)
    out.finish()

    grpc = read_grpc(root)
    metadata = read_metadata(root, directory)

    http = root.section("http")
    http_address = http.get("address", str, DEFAULT_HTTP_ADDRESS, check=check_host_port)
    http.finish()

    refresh = root.section("refresh")
    concurrency = refresh.get(
        "concurrency", int, 32, check=lambda v: None if 1 <= v <= 1024 else "must be 1..1024"
    )
    exit_on_permanent = refresh.get("exit_on_permanent_failure", bool, False)
    fleet = read_fleet(refresh)
    refresh.finish()

    read = [(s.path, read_target(s), s.raw("name")) for s in root.items("targets")]
    targets = tuple(t for _, t, _ in read if t is not None)
    broker = read_broker(root)
    workloads = read_workloads(root)
    rules_read = [(s.path, read_workload_rule(s)) for s in root.items("workload_targets")]
    rules = [(path, r) for path, r in rules_read if r is not None]
    if not read and not rules_read:
        root.error("targets", "is required: list at least one target (or workload_targets)")
    check_unique_names(root, [(path, name) for path, _, name in read])
    check_serving(root, grpc, metadata, [(path, t) for path, t, _ in read if t is not None],
                  rule_served={(k, r.name) for _, r in rules for k in r.serve_metadata})
    check_rules(root, rules, broker=broker, workloads=workloads,
                target_names={t.name for t in targets},
                metadata_keys={k for k, _ in metadata.endpoints})
    root.finish()
    if not directory or not socket:
        return None
    return Config(
        workload_api=WorkloadApiConfig(socket=socket, timeout=timeout),
        outputs=OutputsConfig(directory=Path(directory), allow_non_tmpfs=allow_non_tmpfs),
        targets=targets,
        refresh=RefreshConfig(concurrency=concurrency,
                              exit_on_permanent_failure=exit_on_permanent,
                              fleet=fleet),
        grpc=grpc,
        http_address=http_address,
        metadata=metadata,
        broker=broker,
        workloads=workloads,
        workload_targets=tuple(r for _, r in rules),
    )


def _check_workload_socket(v: str) -> str | None:
    if v.startswith("tcp://"):
        return "tcp:// Workload API addresses are not supported (py-spiffe speaks unix sockets)"
    return check_unix_uri(v)
