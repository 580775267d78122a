"""The typed model of the config file (DESIGN.md's contract): what `load_config`
returns. Each cloud's hop sections are its own types (`bridge.clouds.<cloud>.config`);
here they are only `HopConfig`s."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from bridge.clouds import HopConfig
from bridge.config.fleet import FleetConfig
from bridge.config.serving import GrpcConfig, MetadataConfig

if TYPE_CHECKING:  # they build on TargetConfig below
    from bridge.config.workloads import BrokerSection, WorkloadRule, WorkloadsConfig

DEFAULT_HTTP_ADDRESS = "127.0.0.1:9464"


@dataclass(frozen=True, slots=True)
class TargetConfig:
    """One cloud identity the bridge keeps fresh: `hops[0]` is fed the JWT-SVID (for
    `audience`), each further hop by the one before (`bridge.clouds.chain`)."""

    name: str
    audience: str
    hops: tuple[HopConfig, ...]
    spiffe_id: str | None = None
    jwt_file: bool = False
    allowed_callers: tuple[str, ...] = ()  # empty: the socket's file permissions decide
    serve: tuple[str, ...] = ()            # metadata endpoints: container, imds, gce
    source: str = "jwt"                    # which SVID feeds hops[0]: jwt | x509
    x509_files: bool = False               # write the X.509-SVID (opt-in, like jwt_file)

    @property
    def final(self) -> HopConfig:
        """The hop whose material the target hands out."""
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
    fleet: FleetConfig = field(default_factory=FleetConfig)  # spread, budgets, coalescing


@dataclass(frozen=True, slots=True)
class Config:
    workload_api: WorkloadApiConfig
    outputs: OutputsConfig
    targets: tuple[TargetConfig, ...]
    refresh: RefreshConfig = field(default_factory=RefreshConfig)
    grpc: GrpcConfig = field(default_factory=GrpcConfig)
    http_address: str = DEFAULT_HTTP_ADDRESS
    metadata: MetadataConfig = field(default_factory=MetadataConfig)
    # per-workload identities (bridge.config.workloads): the agent's broker endpoint,
    # the lifecycle's bounds, and the rules
    broker: BrokerSection | None = None
    workloads: WorkloadsConfig | None = None
    workload_targets: tuple[WorkloadRule, ...] = ()

    def target(self, name: str) -> TargetConfig | None:
        return next((t for t in self.targets if t.name == name), None)
