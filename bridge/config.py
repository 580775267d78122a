"""The configuration file: a typed, validated model of the YAML contract in DESIGN.md.

`load_config` reads the file and returns a `Config` or raises `ConfigError` carrying
every problem with its key path. Defaults < file < `SPIFFE_ENDPOINT_SOCKET` (only when
the file sets no socket) — the precedence the SPIFFE spec asks of Workload API clients.
"""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from bridge.config_checks import (
    check_abs_path,
    check_audience,
    check_endpoint,
    check_host_port,
    check_spiffe_id,
    check_unix_uri,
    clip,
)
from bridge.config_reader import Problems, Section
from bridge.config_serving import (
    GrpcConfig,
    MetadataConfig,
    read_allowed_callers,
    read_grpc,
    read_metadata,
    read_serve,
)
from bridge.errors import ConfigError, ConfigProblem

DEFAULT_AWS_AUDIENCE = "sts.amazonaws.com"
DEFAULT_GCP_SCOPE = "https://www.googleapis.com/auth/cloud-platform"
DEFAULT_GCP_STS = "https://sts.googleapis.com/v1/token"
DEFAULT_GCP_IAM = "https://iamcredentials.googleapis.com"
MAX_CHAIN = 5
DEFAULT_HTTP_ADDRESS = "127.0.0.1:9464"
# fullmatch + ASCII: `$` would accept a trailing newline, `\w`/`\d` would accept Unicode.
_NAME = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?", re.ASCII)
_ROLE_ARN = re.compile(r"arn:aws(-cn|-us-gov|-iso|-iso-b)?:iam::\d{12}:role/[\w+=,.@/-]{1,512}",
                       re.ASCII)
_REGION = re.compile(r"[a-z]{2}(-[a-z]+)+-\d{1,2}", re.ASCII)
_SESSION_NAME = re.compile(r"[\w+=,.@-]{2,64}", re.ASCII)
_PROVIDER = re.compile(r"//iam\.googleapis\.com/projects/\d{1,20}/locations/global/"
                       r"workloadIdentityPools/[a-z0-9-]{4,32}/providers/[a-z0-9-]{4,32}",
                       re.ASCII)
_SERVICE_ACCOUNT = re.compile(r"[a-z0-9][a-z0-9.-]{0,62}@[a-z0-9-]+(\.[a-z0-9-]+)*"
                              r"\.gserviceaccount\.com", re.ASCII)
_EXTERNAL_ID = re.compile(r"[\w+=,.@:/-]{2,1224}", re.ASCII)


@dataclass(frozen=True, slots=True)
class AwsTarget:
    """An AWS hop: AssumeRoleWithWebIdentity from a JWT (first hop, or after GCP with a
    Google ID token minted for `audience`), or AssumeRole with the previous AWS session."""

    role_arn: str
    region: str
    duration: float = 3600.0
    session_name: str | None = None
    sts_endpoint: str | None = None
    external_id: str | None = field(default=None, repr=False)
    audience: str = DEFAULT_AWS_AUDIENCE


@dataclass(frozen=True, slots=True)
class GcpTarget:
    """A GCP hop: STS token exchange into a workload identity pool, then (optionally)
    generateAccessToken on `service_account` through `delegates`."""

    workload_identity_provider: str
    service_account: str | None = None
    delegates: tuple[str, ...] = ()
    scopes: tuple[str, ...] = (DEFAULT_GCP_SCOPE,)
    lifetime: float = 3600.0
    sts_endpoint: str = DEFAULT_GCP_STS
    iam_credentials_endpoint: str = DEFAULT_GCP_IAM
    external_account_file: bool = False


Hop = AwsTarget | GcpTarget


@dataclass(frozen=True, slots=True)
class TargetConfig:
    """One cloud identity the bridge keeps fresh: a first hop fed by the JWT-SVID, then
    `chain` hops, each fed by the previous hop's credential."""

    name: str
    audience: str
    aws: AwsTarget | None = None
    spiffe_id: str | None = None
    jwt_file: bool = False
    gcp: GcpTarget | None = None
    chain: tuple[Hop, ...] = ()
    allowed_callers: tuple[str, ...] = ()  # empty: the socket's file permissions decide
    serve: tuple[str, ...] = ()            # metadata endpoints: container, imds, gce

    @property
    def hops(self) -> tuple[Hop, ...]:
        first: Hop | None = self.aws if self.aws is not None else self.gcp
        return ((first,) if first is not None else ()) + self.chain

    @property
    def final(self) -> Hop:
        return self.hops[-1]


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
    exit_on_permanent_failure: bool = False  # init containers: fail fast, let k8s report


@dataclass(frozen=True, slots=True)
class Config:
    workload_api: WorkloadApiConfig
    outputs: OutputsConfig
    targets: tuple[TargetConfig, ...]
    refresh: RefreshConfig = field(default_factory=RefreshConfig)
    grpc: GrpcConfig = field(default_factory=GrpcConfig)
    http_address: str = DEFAULT_HTTP_ADDRESS
    metadata: MetadataConfig = field(default_factory=MetadataConfig)

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
    refresh.finish()

    read = [(s.path, _read_target(s), s.raw("name")) for s in root.items("targets")]
    targets = tuple(t for _, t, _ in read if t is not None)
    if not read:
        root.error("targets", "is required: list at least one target")
    _check_unique_names(root, [(path, name) for path, _, name in read])
    _check_serving(root, grpc, metadata, read)
    root.finish()
    if not directory or not socket:
        return None
    return Config(
        workload_api=WorkloadApiConfig(socket=socket, timeout=timeout),
        outputs=OutputsConfig(directory=Path(directory), allow_non_tmpfs=allow_non_tmpfs),
        targets=targets,
        refresh=RefreshConfig(concurrency=concurrency,
                              exit_on_permanent_failure=exit_on_permanent),
        grpc=grpc,
        http_address=http_address,
        metadata=metadata,
    )


def _read_target(s: Section) -> TargetConfig | None:
    name = s.get("name", str, "", required=True, check=_check_name)
    spiffe_id = s.get("spiffe_id", str, "", check=check_spiffe_id) or None
    jwt_file = s.get("jwt_file", bool, False)
    allowed_callers = read_allowed_callers(s)
    serve = read_serve(s)
    aws: AwsTarget | None = None
    gcp: GcpTarget | None = None
    chain: list[Hop | None] = []
    if s.has("aws") and s.has("gcp"):
        s.error("gcp", "a target starts with one cloud: use `aws` or `gcp`, and `chain` "
                "for further hops")
    if s.has("aws"):
        section = s.section("aws")
        aws = _read_aws(section, first=True)
        chain += [_read_aws(c, shorthand=True) for c in section.items("chain")]
        section.finish()
    elif s.has("gcp"):
        section = s.section("gcp")
        gcp = _read_gcp(section)
        section.finish()
    else:
        s.error("aws", "is required: a target needs a cloud section (aws or gcp)")
    chain += [_read_chain_hop(c) for c in s.items("chain")]
    default_audience = gcp.workload_identity_provider if gcp else DEFAULT_AWS_AUDIENCE
    audience = s.get("audience", str, default_audience, check=check_audience)
    first: Hop | None = aws or gcp
    if first is not None and None not in chain:
        _check_chain(s, [first, *(h for h in chain if h is not None)], jwt_file=jwt_file)
    s.finish()
    if not name or first is None or None in chain:
        return None
    return TargetConfig(name=name, audience=audience, aws=aws, gcp=gcp, spiffe_id=spiffe_id,
                        jwt_file=jwt_file, chain=tuple(h for h in chain if h is not None),
                        allowed_callers=allowed_callers, serve=serve)


def _read_chain_hop(c: Section) -> Hop | None:
    """One `chain:` element: a mapping with exactly one of `aws` or `gcp`."""
    hop: Hop | None = None
    if c.has("aws") == c.has("gcp"):
        c.problems.add(c.path, "each chain hop needs exactly one of `aws` or `gcp`")
        c.raw("aws")
        c.raw("gcp")
    elif c.has("aws"):
        section = c.section("aws")
        hop = _read_aws(section)
        section.finish()
    else:
        section = c.section("gcp")
        hop = _read_gcp(section)
        section.finish()
    c.finish()
    return hop


def _check_chain(s: Section, hops: list[Hop], *, jwt_file: bool) -> None:
    """Cross-hop rules: what may follow what, and the limits chaining imposes."""
    if len(hops) > MAX_CHAIN:
        s.error("chain", f"at most {MAX_CHAIN} hops in all, got {len(hops)}")
    for i, (prev, hop) in enumerate(itertools.pairwise(hops), start=1):
        where = f"hop {i + 1} of the chain"
        if isinstance(prev, GcpTarget) and isinstance(hop, GcpTarget):
            s.error("chain", f"{where}: GCP after GCP is a delegation; list the service "
                    "accounts in `delegates` of the GCP hop instead")
        if isinstance(prev, GcpTarget) and isinstance(hop, AwsTarget) and not (
                prev.service_account):
            s.error("chain", f"{where}: an AWS hop after GCP needs a Google ID token, so "
                    "the GCP hop before it must set `service_account`")
        if isinstance(prev, AwsTarget) and isinstance(hop, AwsTarget) and hop.duration > 3600:
            s.error("chain", f"{where}: role chaining limits sessions to 1h (AWS refuses "
                    "more for roles assumed with role-session credentials)")
    for i, hop in enumerate(hops):
        if isinstance(hop, GcpTarget) and hop.external_account_file and (
                i != 0 or not jwt_file):
            s.error("gcp.external_account_file", "needs `jwt_file: true` and the GCP hop "
                    "first: the SDK then exchanges the JWT-SVID file itself")


def _read_aws(a: Section, *, first: bool = False, shorthand: bool = False) -> AwsTarget | None:
    """An AWS hop. `first`: from the JWT-SVID. `shorthand`: an element of DESIGN's
    `aws.chain` (AssumeRole: role, external id, session name, duration). Chain hops
    without region/endpoint use the previous AWS hop's at build time."""
    role_arn = a.get("role_arn", str, "", required=True, check=_check_role_arn)
    endpoint = None if shorthand else (
        a.get("sts_endpoint", str, "", check=check_endpoint) or None)
    region = "" if shorthand else a.get(
        "region", str, "", required=first and not a.has("sts_endpoint"), check=_check_region)
    # 15m..12h is what STS accepts; the role's own maximum is checked by STS itself.
    duration = a.duration("duration", 3600.0, minimum=900, maximum=43200)
    session_name = a.get("session_name", str, "", check=_check_session_name) or None
    external_id = None if first else (
        a.get("external_id", str, "", check=_check_external_id) or None)
    audience = DEFAULT_AWS_AUDIENCE if first or shorthand else a.get(
        "audience", str, DEFAULT_AWS_AUDIENCE, check=check_audience)
    if not role_arn or (first and not (region or endpoint)):
        return None
    return AwsTarget(role_arn=role_arn, region=region, duration=duration,
                     session_name=session_name, sts_endpoint=endpoint,
                     external_id=external_id, audience=audience)


def _read_gcp(g: Section) -> GcpTarget | None:
    provider = g.get("workload_identity_provider", str, "", required=True,
                     check=_check_provider)
    service_account = g.get("service_account", str, "", check=_check_service_account) or None
    delegates = g.strings("delegates")
    for i, d in enumerate(delegates):
        if message := _check_service_account(d):
            g.problems.add(f"{g.key('delegates')}[{i}]", message)
    if delegates and not service_account:
        g.error("delegates", "delegates need a `service_account` to impersonate at the end")
    scopes = g.strings("scopes") if g.has("scopes") else [DEFAULT_GCP_SCOPE]
    if not scopes:
        g.error("scopes", "list at least one OAuth scope")
    for i, scope in enumerate(scopes):
        if not scope.startswith("https://"):
            g.problems.add(f"{g.key('scopes')}[{i}]", f"{clip(scope)} is not an OAuth "
                           "scope URL (https://www.googleapis.com/auth/...)")
    lifetime = g.duration("lifetime", 3600.0, minimum=600, maximum=43200)
    sts = g.get("sts_endpoint", str, DEFAULT_GCP_STS, check=check_endpoint)
    iam = g.get("iam_credentials_endpoint", str, DEFAULT_GCP_IAM, check=check_endpoint)
    external_file = g.get("external_account_file", bool, False)
    if not provider:
        return None
    return GcpTarget(workload_identity_provider=provider, service_account=service_account,
                     delegates=tuple(delegates), scopes=tuple(scopes), lifetime=lifetime,
                     sts_endpoint=sts, iam_credentials_endpoint=iam.rstrip("/"),
                     external_account_file=external_file)


def _check_serving(root: Section, grpc: GrpcConfig, metadata: MetadataConfig,
                   read: list[tuple[str, TargetConfig | None, object]]) -> None:
    """Cross-section rules for serving: each metadata endpoint has its listener and the
    right cloud, IMDS and GCE serve one identity each, and nothing widens access past
    `allowed_callers`."""
    targets = [(path, t) for path, t, _ in read if t is not None]
    listeners = {"container": metadata.container, "imds": metadata.imds, "gce": metadata.gce}
    cloud = {"container": AwsTarget, "imds": AwsTarget, "gce": GcpTarget}
    for kind, listener in listeners.items():
        serving = [(path, t) for path, t in targets if kind in t.serve]
        for path, t in serving:
            if listener is None:
                root.problems.add(f"{path}.serve", f"serves {kind} but `metadata.{kind}` "
                                  "is not configured")
            if not isinstance(t.final, cloud[kind]):
                want = "an AWS" if cloud[kind] is AwsTarget else "a GCP"
                root.problems.add(f"{path}.serve", f"{kind} needs {want} credential; this "
                                  "target's last hop is another cloud")
            final = t.final
            if kind == "gce" and isinstance(final, GcpTarget) and not final.service_account:
                root.problems.add(f"{path}.serve", "gce needs `service_account`: SDKs ask "
                                  "the metadata server for the account's email")
            if t.allowed_callers:
                root.problems.add(f"{path}.serve", "a target with `allowed_callers` is "
                                  "served over gRPC only: metadata endpoints cannot check "
                                  "a caller's SPIFFE ID")
        if kind != "container" and len(serving) > 1:
            root.problems.add(f"{serving[1][0]}.serve", f"{kind} serves one identity, and "
                              f"{serving[0][1].name} already has it")
        if listener is not None and not serving:
            root.error(f"metadata.{kind}", "no target lists it in `serve`")
    if grpc.tcp_address and any(not t.allowed_callers for _, t in targets):
        root.error("grpc.tcp_address", "every local user can connect over TCP: give every "
                   "target `allowed_callers` first")
    if grpc.socket_mode & 0o007 and any(not t.allowed_callers for _, t in targets):
        root.error("grpc.socket_mode", f"{grpc.socket_mode:04o} opens the socket to every "
                   "user: give every target `allowed_callers` first")


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




def _check_role_arn(v: str) -> str | None:
    if _ROLE_ARN.fullmatch(v) and len(v) <= 2048:
        return None
    return (f"{clip(v)} is not an IAM role ARN "
            "(arn:aws:iam::<12-digit account>:role/<name>)")


def _check_provider(v: str) -> str | None:
    if _PROVIDER.fullmatch(v):
        return None
    return (f"{clip(v)} is not a workload identity provider: use //iam.googleapis.com/"
            "projects/<project NUMBER>/locations/global/workloadIdentityPools/<pool>/"
            "providers/<provider>")


def _check_service_account(v: str) -> str | None:
    if _SERVICE_ACCOUNT.fullmatch(v):
        return None
    return f"{clip(v)} is not a service account email (name@project.iam.gserviceaccount.com)"


def _check_external_id(v: str) -> str | None:
    return None if _EXTERNAL_ID.fullmatch(v) else "must be 2-1224 characters of [\\w+=,.@:/-]"


def _check_region(v: str) -> str | None:
    return None if _REGION.fullmatch(v) else f"{clip(v)} is not an AWS region (e.g. us-east-1)"


def _check_session_name(v: str) -> str | None:
    if _SESSION_NAME.fullmatch(v):
        return None
    return "must be 2-64 characters of letters, digits and +=,.@_- (no '/' or ':')"


def _check_workload_socket(v: str) -> str | None:
    if v.startswith("tcp://"):
        return "tcp:// Workload API addresses are not supported (py-spiffe speaks unix sockets)"
    return check_unix_uri(v)






