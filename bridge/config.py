"""The configuration file: a typed, validated model of the YAML contract in DESIGN.md.

`load_config` reads the file and returns a `Config` or raises `ConfigError` carrying
every problem with its key path. Defaults < file < `SPIFFE_ENDPOINT_SOCKET` (only when
the file sets no socket) — the precedence the SPIFFE spec asks of Workload API clients.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import SplitResult, urlsplit

import yaml

from bridge.config_reader import Problems, Section
from bridge.errors import ConfigError, ConfigProblem

DEFAULT_AWS_AUDIENCE = "sts.amazonaws.com"
DEFAULT_GRPC_SOCKET = "unix:///run/spiffe-bridge/bridge.sock"
DEFAULT_HTTP_ADDRESS = "127.0.0.1:9464"
# fullmatch + ASCII: `$` would accept a trailing newline, `\w`/`\d` would accept Unicode.
_NAME = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?", re.ASCII)
_ROLE_ARN = re.compile(r"arn:aws(-cn|-us-gov|-iso|-iso-b)?:iam::\d{12}:role/[\w+=,.@/-]{1,512}",
                       re.ASCII)
_REGION = re.compile(r"[a-z]{2}(-[a-z]+)+-\d{1,2}", re.ASCII)
_SESSION_NAME = re.compile(r"[\w+=,.@-]{2,64}", re.ASCII)
_SPIFFE_ID = re.compile(r"spiffe://[a-z0-9._-]{1,255}(/[A-Za-z0-9._-]+)*", re.ASCII)
_PORT = re.compile(r"\d{1,5}", re.ASCII)


@dataclass(frozen=True, slots=True)
class AwsTarget:
    """AssumeRoleWithWebIdentity into `role_arn`."""

    role_arn: str
    region: str
    duration: float = 3600.0
    session_name: str | None = None
    sts_endpoint: str | None = None


@dataclass(frozen=True, slots=True)
class TargetConfig:
    """One cloud identity the bridge keeps fresh."""

    name: str
    audience: str
    aws: AwsTarget
    spiffe_id: str | None = None
    jwt_file: bool = False


@dataclass(frozen=True, slots=True)
class WorkloadApiConfig:
    socket: str
    timeout: float = 10.0


@dataclass(frozen=True, slots=True)
class OutputsConfig:
    directory: Path
    allow_non_tmpfs: bool = False


@dataclass(frozen=True, slots=True)
class RefreshConfig:
    concurrency: int = 32


@dataclass(frozen=True, slots=True)
class Config:
    workload_api: WorkloadApiConfig
    outputs: OutputsConfig
    targets: tuple[TargetConfig, ...]
    refresh: RefreshConfig = field(default_factory=RefreshConfig)
    grpc_socket: str = DEFAULT_GRPC_SOCKET
    http_address: str = DEFAULT_HTTP_ADDRESS

    def target(self, name: str) -> TargetConfig | None:
        return next((t for t in self.targets if t.name == name), None)


def load_config(path: str | Path, env: Mapping[str, str] | None = None) -> Config:
    """Read and validate a config file; raise ConfigError listing every problem."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([ConfigProblem("", f"cannot read {path}: {exc.strerror}")]) from None
    except UnicodeDecodeError:
        raise ConfigError([ConfigProblem("", f"{path} is not UTF-8 text")]) from None
    return parse_config(text, env=os.environ if env is None else env)


def parse_config(text: str, *, env: Mapping[str, str]) -> Config:
    """Validate YAML text against the contract; raise ConfigError listing every problem."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "malformed YAML"
        raise ConfigError([ConfigProblem("", f"not valid YAML{where}: {problem}")]) from None
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
    directory = out.get("directory", str, "", required=True, check=_check_abs_path)
    allow_non_tmpfs = out.get("allow_non_tmpfs", bool, False)
    out.finish()

    grpc = root.section("grpc")
    grpc_socket = grpc.get("socket", str, DEFAULT_GRPC_SOCKET, check=_check_unix_uri)
    grpc.finish()

    http = root.section("http")
    http_address = http.get("address", str, DEFAULT_HTTP_ADDRESS, check=_check_host_port)
    http.finish()

    refresh = root.section("refresh")
    concurrency = refresh.get(
        "concurrency", int, 32, check=lambda v: None if 1 <= v <= 1024 else "must be 1..1024"
    )
    refresh.finish()

    read = [(s.path, _read_target(s), s.raw("name")) for s in root.items("targets")]
    targets = tuple(t for _, t, _ in read if t is not None)
    if not read:
        root.error("targets", "is required: list at least one target")
    _check_unique_names(root, [(path, name) for path, _, name in read])
    root.finish()
    if not directory or not socket:
        return None
    return Config(
        workload_api=WorkloadApiConfig(socket=socket, timeout=timeout),
        outputs=OutputsConfig(directory=Path(directory), allow_non_tmpfs=allow_non_tmpfs),
        targets=targets,
        refresh=RefreshConfig(concurrency=concurrency),
        grpc_socket=grpc_socket,
        http_address=http_address,
    )


def _read_target(s: Section) -> TargetConfig | None:
    name = s.get("name", str, "", required=True, check=_check_name)
    spiffe_id = s.get("spiffe_id", str, "", check=_check_spiffe_id) or None
    jwt_file = s.get("jwt_file", bool, False)
    aws: AwsTarget | None = None
    if s.has("gcp"):
        s.raw("gcp")
        s.error("gcp", "GCP targets are not supported by this version yet")
    if s.has("aws"):
        aws = _read_aws(s.section("aws"))
    elif not s.has("gcp"):
        s.error("aws", "is required: a target needs a cloud section (aws)")
    audience = s.get("audience", str, DEFAULT_AWS_AUDIENCE, check=_check_audience)
    s.finish()
    if not name or aws is None:
        return None
    return TargetConfig(name=name, audience=audience, aws=aws, spiffe_id=spiffe_id,
                        jwt_file=jwt_file)


def _read_aws(a: Section) -> AwsTarget | None:
    role_arn = a.get("role_arn", str, "", required=True, check=_check_role_arn)
    endpoint = a.get("sts_endpoint", str, "", check=_check_endpoint) or None
    region = a.get("region", str, "", required=not a.has("sts_endpoint"), check=_check_region)
    # 15m..12h is what STS accepts; the role's own maximum is checked by STS itself.
    duration = a.duration("duration", 3600.0, minimum=900, maximum=43200)
    session_name = a.get("session_name", str, "", check=_check_session_name) or None
    a.finish()
    if not role_arn or not (region or endpoint):
        return None
    return AwsTarget(role_arn=role_arn, region=region or "us-east-1", duration=duration,
                     session_name=session_name, sts_endpoint=endpoint)


def _check_unique_names(root: Section, named: list[tuple[str, object]]) -> None:
    """Names key files, metric labels and gRPC requests, so they must be unique."""
    seen: dict[str, str] = {}
    for path, name in named:
        if not isinstance(name, str):
            continue
        if name in seen:
            root.problems.add(f"{path}.name", f"duplicate target name {name!r} "
                              f"(first used at {seen[name]})")
        seen.setdefault(name, path)


def _check_name(v: str) -> str | None:
    if _NAME.fullmatch(v):
        return None
    return (f"{v!r} is not a valid target name: use 1-63 of [a-z0-9-], "
            "starting and ending with a letter or digit")


def _check_spiffe_id(v: str) -> str | None:
    segments = v.removeprefix("spiffe://").split("/")[1:]
    if _SPIFFE_ID.fullmatch(v) and not {".", ".."} & set(segments) and len(v) <= 2048:
        return None
    return f"{_clip(v)} is not a SPIFFE ID (spiffe://trust-domain/path)"


def _check_audience(v: str) -> str | None:
    if not v.strip() or v != v.strip():
        return "must be a non-empty string without surrounding whitespace"
    return None if len(v) <= 255 else "must be at most 255 characters"


def _check_role_arn(v: str) -> str | None:
    if _ROLE_ARN.fullmatch(v) and len(v) <= 2048:
        return None
    return (f"{_clip(v)} is not an IAM role ARN "
            "(arn:aws:iam::<12-digit account>:role/<name>)")


def _check_region(v: str) -> str | None:
    return None if _REGION.fullmatch(v) else f"{_clip(v)} is not an AWS region (e.g. us-east-1)"


def _check_session_name(v: str) -> str | None:
    if _SESSION_NAME.fullmatch(v):
        return None
    return "must be 2-64 characters of letters, digits and +=,.@_- (no '/' or ':')"


def _check_workload_socket(v: str) -> str | None:
    if v.startswith("tcp://"):
        return "tcp:// Workload API addresses are not supported (py-spiffe speaks unix sockets)"
    return _check_unix_uri(v)


def _split(v: str) -> SplitResult | None:
    try:
        parts = urlsplit(v)
        _ = parts.port  # raises on a malformed port
    except ValueError:
        return None
    return parts


def _check_unix_uri(v: str) -> str | None:
    parts = _split(v)
    if parts is None:
        return f"{_clip(v)} is not a valid URI: use unix:///absolute/path"
    if parts.scheme != "unix":
        return f"{_clip(v)} must be a unix:///absolute/path URI"
    if parts.netloc or parts.query or parts.fragment or not parts.path.startswith("/"):
        return f"{_clip(v)} must be unix:///absolute/path (no host, query or fragment)"
    if len(parts.path.encode()) > 107:
        return "socket path is longer than the 107-byte unix socket limit"
    return None


def _check_abs_path(v: str) -> str | None:
    if not v.startswith("/"):
        return f"{_clip(v)} must be an absolute path"
    if ".." in Path(v).parts:
        return f"{_clip(v)} must not contain '..'"
    if "\n" in v or "\x00" in v:
        return "must not contain newlines or NUL bytes"
    return None


def _check_host_port(v: str) -> str | None:
    host, sep, port = v.rpartition(":")
    host = host.strip("[]")
    if not sep or not _PORT.fullmatch(port) or not 0 <= int(port) <= 65535:
        return f"{_clip(v)} must be HOST:PORT (e.g. 127.0.0.1:9464)"
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if host != "localhost":
            return f"{_clip(v)}: the host must be an IP address or localhost"
    return None


def is_loopback_host(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _check_endpoint(v: str) -> str | None:
    parts = _split(v)
    if parts is None:
        return f"{_clip(v)} is not a valid URL"
    if parts.scheme == "https" and parts.hostname:
        return None
    if parts.scheme == "http" and parts.hostname and is_loopback_host(parts.hostname):
        return None
    return f"{_clip(v)} must be an https:// URL (plain http is allowed only on loopback)"


def _clip(v: str) -> str:
    text = repr(v)
    return text if len(text) <= 80 else text[:77] + "..."
