"""Wiring `workload_targets`: the broker client, the lifecycle, and the listeners that
serve it (called once by the daemon assembly, `app.daemon.build`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from spiffe import JwtBundleSet

from bridge.clock import Clock
from bridge.clouds import CLOUDS, CloudSession, HopContext
from bridge.clouds.aws.container import ContainerConfig
from bridge.clouds.aws.imds import ImdsConfig
from bridge.clouds.gcp.gce import GceConfig
from bridge.config import Config
from bridge.logs import Redactor
from bridge.metrics import Metrics
from bridge.refresh.budget import Budgets
from bridge.refresh.limits import Limits
from bridge.serving import Service
from bridge.serving.grpc.callers import CallerVerifier
from bridge.serving.metadata import MetadataContext
from bridge.sources.broker import BrokerClient, BrokerConfig
from bridge.workloads.grpc import WorkloadGrpcService
from bridge.workloads.lifecycle import WorkloadCredentials
from bridge.workloads.metadata import (
    WorkloadContainerServer,
    WorkloadGceServer,
    WorkloadImdsServer,
)


@dataclass
class WorkloadParts:
    credentials: WorkloadCredentials | None = None
    broker: BrokerClient | None = None
    services: list[Service] = field(default_factory=list)


def build_workloads(config: Config, *, clock: Clock, metrics: Metrics, redactor: Redactor,
                    limits: Limits, sessions: dict[str, CloudSession],
                    hop_context: HopContext, context: MetadataContext,
                    previous: BrokerClient | None,
                    bundles: Callable[[], JwtBundleSet | None],
                    caller_now: Callable[[], float],
                    budgets: Budgets | None = None) -> WorkloadParts:
    """The parts for `config.workload_targets`: with `broker:` callers are attested by
    PID; always, a caller may present its own JWT-SVID for the rule's audience (verified
    against `bundles`, by `caller_now`)."""
    section = config.broker
    workloads = config.workloads
    if not config.workload_targets or workloads is None:
        return WorkloadParts()
    broker: BrokerClient | None = None
    if section is not None:
        broker_config = BrokerConfig(socket=section.socket, agent_id=section.agent_id,
                                     spiffe_id=section.spiffe_id, timeout=section.timeout)
        if previous is not None and previous.config == broker_config:
            broker = previous
        else:
            metrics.broker_up.set(0)
            broker = BrokerClient(
                broker_config, workload_api_socket=config.workload_api.socket,
                now=clock.time, monotonic=clock.monotonic,
                on_up=lambda up: metrics.broker_up.set(1 if up else 0))

    def session(cloud: str) -> CloudSession:
        if cloud not in sessions:
            sessions[cloud] = CLOUDS[cloud].session(hop_context)
        return sessions[cloud]

    rules = config.workload_targets
    credentials = WorkloadCredentials(
        rules, broker=broker, sessions=session, clock=clock, metrics=metrics,
        redactor=redactor, limits=limits, idle=workloads.idle,
        max_identities=workloads.max_identities,
        verifiers={r.name: CallerVerifier(bundles, audience=r.audience, now=caller_now)
                   for r in rules}, budgets=budgets)
    services: list[Service] = []
    if workloads.grpc_socket and any(r.serve_grpc for r in rules):
        services.append(WorkloadGrpcService(
            workloads.grpc_socket, mode=workloads.socket_mode, rules=rules,
            credentials=credentials, metrics=metrics,
            request_timeout=workloads.request_timeout, now=clock.monotonic))
    imds = [r for r in rules if "imds" in r.serve_metadata]
    listener = config.metadata.get("imds")
    if imds and isinstance(listener, ImdsConfig):
        services.append(WorkloadImdsServer(
            listener.address, imds[0], credentials=credentials,
            timeout=workloads.request_timeout, monotonic=clock.monotonic, metrics=metrics,
            allowed_uids=listener.allowed_uids))
    gce = [r for r in rules if "gce" in r.serve_metadata]
    listener = config.metadata.get("gce")
    if gce and isinstance(listener, GceConfig):
        services.append(WorkloadGceServer(
            listener, gce[0], credentials=credentials, timeout=workloads.request_timeout,
            now=clock.monotonic, metrics=metrics))
    container = [r for r in rules if "container" in r.serve_metadata]
    listener = config.metadata.get("container")
    if container and isinstance(listener, ContainerConfig):
        services.append(WorkloadContainerServer(
            listener.address, container, token_file=listener.token_file,
            tokens=context.tokens, credentials=credentials,
            timeout=workloads.request_timeout, metrics=metrics,
            allowed_uids=listener.allowed_uids))
    return WorkloadParts(credentials=credentials, broker=broker, services=services)
