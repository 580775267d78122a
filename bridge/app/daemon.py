"""Assembly: the one place where configuration becomes running objects.

`build` wires config to source, the clouds' sessions and hops, pipelines, store,
outputs, metrics and services; `serve` runs them until a stop event, `run_once`
refreshes everything once. Nothing here runs at import time, and every collaborator
can be injected (clock, registry, source).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from prometheus_client import CollectorRegistry

from bridge.clock import Clock, SystemClock
from bridge.clouds import CLOUDS, CloudSession, HopContext, cloud_of, endpoints
from bridge.clouds.chain import build_hops
from bridge.config import Config, OutputsConfig, TargetConfig
from bridge.logs import Redactor
from bridge.metrics import Metrics
from bridge.model import TargetStatus
from bridge.outputs import CredentialDirectory, OutputWriter, recover_svids
from bridge.outputs.directory import DIRECTORY_OUTPUT, JWT_OUTPUT
from bridge.outputs.files import TargetFile
from bridge.readersocket import reader_socket
from bridge.refresh import Scheduler, TargetPipeline
from bridge.refresh.budget import BudgetConfig, Budgets
from bridge.refresh.coalesce import Coalescer
from bridge.refresh.limits import Limits
from bridge.refresh.spread import Spread, default_node_id, seed
from bridge.serving import Service
from bridge.serving.grpc import CallerVerifier, GrpcService, ServedTarget
from bridge.serving.grpc.access import Access
from bridge.serving.health import HealthServer
from bridge.serving.metadata import LocalTokens, MetadataContext
from bridge.serving.reader import ReaderServer
from bridge.skew import ClockSkew
from bridge.sources import SvidSource, X509Svids
from bridge.sources.broker import BrokerClient
from bridge.sources.bundles import SKIP_REASONS
from bridge.sources.workload_api import WorkloadApiSource
from bridge.sources.x509 import X509SvidSource
from bridge.store import CredentialStore
from bridge.workloads.assembly import build_workloads
from bridge.workloads.lifecycle import WorkloadCredentials

log = logging.getLogger(__name__)


BUNDLE_RECHECK = 30.0  # seconds between checks that the bundle stream still runs
BUNDLE_RETRY = 5.0  # while it does not


@dataclass
class Daemon:
    config: Config
    clock: Clock
    metrics: Metrics
    redactor: Redactor
    store: CredentialStore
    source: SvidSource
    scheduler: Scheduler
    directory: CredentialDirectory
    writer: OutputWriter
    services: list[Service] = field(default_factory=list)
    carried: frozenset[str] = frozenset()  # targets whose state a reload kept
    limits: Limits | None = None  # the refreshes' per-endpoint pools, closed with it
    budgets: Budgets | None = None  # the quota scopes' budgets, closed with it
    running: frozenset[int] = frozenset()  # ids of services a previous generation started
    retired: list[Service] = field(default_factory=list)  # its services not taken over
    up_listeners: list[Callable[[bool], None]] = field(default_factory=list)
    handover: bool = False  # at the end of `serve`, leave listeners and source running
    reloaded: bool = False  # built from a previous generation (nothing to recover)
    workloads: WorkloadCredentials | None = None  # workload_targets' lifecycle
    broker: BrokerClient | None = None  # the agent's Broker API (workload_targets)
    x509: X509Svids | None = None  # the X.509-SVID stream, when a target has source x509
    rotation_listeners: list[Callable[[set[str]], None]] = field(default_factory=list)

    def close_sources(self) -> None:
        self.source.close()
        if self.x509 is not None:
            self.x509.close()
        if self.broker is not None:
            self.broker.close()


def build(config: Config, *, clock: Clock | None = None,
          registry: CollectorRegistry | None = None, redactor: Redactor | None = None,
          source: SvidSource | None = None, metrics: Metrics | None = None,
          previous: Daemon | None = None,
          tokens: LocalTokens | None = None, skew: ClockSkew | None = None,
          x509: X509Svids | None = None) -> Daemon:
    """Wire a daemon from config. Must be called inside the event loop that will run it.

    `previous` is the generation a reload replaces (already stopped with `handover`): its
    store goes on (unchanged targets keep their credential and schedule, and their
    metrics never move), its Workload API connection when that is configured alike, and
    every listener that would listen exactly alike (`Service.adopt`): no client sees a
    gap and no other process can take a port. `tokens` (the local endpoints' secrets)
    and `skew` (the clouds' clock) outlive every generation.
    """
    clock = clock or SystemClock()
    metrics = metrics or Metrics(registry or CollectorRegistry())
    metrics.init_outputs([*(k for c in CLOUDS.values() for k in c.output_kinds),
                          JWT_OUTPUT, DIRECTORY_OUTPUT])
    redactor = redactor or Redactor()
    # Two generations of 4 secrets and an SVID per target: nothing live is ever evicted.
    redactor.reserve(16 * len(config.targets) + 256)
    skew = skew or clock_skew(metrics, clock)
    names = [t.name for t in config.targets]
    same_agent = previous is not None and previous.config.workload_api == config.workload_api
    if previous is not None and same_agent and source is None:
        source, listeners = previous.source, previous.up_listeners
        del listeners[1:]  # the previous scheduler's; ours joins below
    else:
        listeners = [lambda up: metrics.workload_api_up.set(1 if up else 0)]
    for reason in SKIP_REASONS:  # zeros from the start, so increase() sees the first
        metrics.bundle_keys_skipped.labels(reason)
    if source is None:
        metrics.workload_api_up.set(0)
        source = WorkloadApiSource(
            config.workload_api.socket, timeout=config.workload_api.timeout, now=clock.time,
            monotonic=clock.monotonic, cloud_now=skew.cloud_now,
            on_up=lambda up: _tell(listeners, up),
            on_skipped=lambda reason, n: metrics.bundle_keys_skipped.labels(reason).inc(n))
    x509, rotation = _x509_source(config, clock, x509, previous if same_agent else None,
                                  on_up=lambda up: _tell(listeners, up))
    kept: set[str] = set()
    if previous is not None:
        store = previous.store
        kept = {t.name for t in config.targets if previous.config.target(t.name) == t}
        store.reconfigure(names, keep=kept)
    else:
        store = CredentialStore(names)
    # One session per cloud in use: a cloud no target names is never imported.
    hop_context = HopContext(timeout=config.workload_api.timeout, skew=skew, now=clock.time)
    sessions: dict[str, CloudSession] = {}
    for t in config.targets:
        for hop in t.hops:
            if hop.cloud not in sessions:
                sessions[hop.cloud] = cloud_of(hop).session(hop_context)
    limits = Limits(config.refresh.concurrency)
    node, budgets, coalescer = _fleet(config, clock, metrics)
    pipelines = [
        TargetPipeline(t, source=source, hops=build_hops(t.hops, sessions, t.source),
                       monotonic=clock.monotonic, now=clock.time, limits=limits,
                       budgets=budgets, coalescer=coalescer, x509=x509)
        for t in config.targets
    ]
    scheduler = Scheduler(pipelines, store=store, clock=clock, metrics=metrics,
                          redactor=redactor,
                          exit_on_permanent=config.refresh.exit_on_permanent_failure,
                          spread=Spread(node, index=config.refresh.fleet.node_index,
                                        nodes=config.refresh.fleet.fleet_size,
                                        order=[p.locked for p in pipelines]),
                          budgeted=True)
    listeners.append(scheduler.source_up)
    rotation.append(scheduler.svid_rotated)
    directory = credential_directory(config.outputs, config.targets)
    writer = OutputWriter(directory, snapshot=store.snapshot, clock=clock, metrics=metrics,
                          targets=names)
    store.subscribe(writer.notify)
    # Callers' SVIDs expire by the later of this host's clock and the clouds': a host
    # clock stepped back must not stretch a caller's token (fails closed, never open).
    verifier = CallerVerifier(source.jwt_bundles, audience=config.grpc.caller_audience,
                              now=lambda: max(clock.time(), skew.cloud_now() or 0.0))
    services: list[Service] = [
        GrpcService(config.grpc, [served_target(t) for t in config.targets], store=store,
                    now=clock.monotonic, verifier=verifier, metrics=metrics),
        HealthServer(config.http_address, page=metrics.render, statuses=store.snapshot,
                     now=clock.monotonic, behind=lambda: writer.behind,
                     seconds_since_tick=lambda: clock.monotonic() - scheduler.last_tick),
    ]
    if config.grpc.reader_socket:
        services.append(_reader(config, verifier, store, clock))
    # Cloud-metadata listeners, one per configured `metadata.*` section (none by default).
    context = MetadataContext(store=store, clock=clock, tokens=tokens or LocalTokens(),
                              metrics=metrics, redactor=redactor)
    services += _metadata_services(config, context)
    parts = build_workloads(config, clock=clock, metrics=metrics, redactor=redactor,
                            limits=limits, sessions=sessions, hop_context=hop_context,
                            context=context,
                            previous=previous.broker if previous is not None else None,
                            bundles=source.jwt_bundles,
                            caller_now=lambda: max(clock.time(), skew.cloud_now() or 0.0),
                            budgets=budgets)
    services += parts.services
    services, running, retired = _take_over(services, previous)
    return Daemon(config=config, clock=clock, metrics=metrics, redactor=redactor, store=store,
                  source=source, scheduler=scheduler, directory=directory, writer=writer,
                  services=services, carried=frozenset(kept), limits=limits, running=running,
                  retired=retired, up_listeners=listeners, reloaded=previous is not None,
                  budgets=budgets, x509=x509, rotation_listeners=rotation,
                  workloads=parts.credentials, broker=parts.broker)


def _metadata_services(config: Config, context: MetadataContext) -> list[Service]:
    """The configured targets' metadata listeners, one per `metadata.*` section that a
    target serves (workload targets' are `build_workloads`')."""
    services: list[Service] = []
    for key, (_, endpoint) in endpoints().items():
        listener = config.metadata.get(key)
        served = [t for t in config.targets if key in t.serve]
        if listener is not None and served:
            services.append(endpoint.build(listener, served[:1] if endpoint.single else served,
                                           context))
    return services


def _x509_source(config: Config, clock: Clock, given: X509Svids | None,
                 previous: Daemon | None, *, on_up: Callable[[bool], None]
                 ) -> tuple[X509Svids | None, list[Callable[[set[str]], None]]]:
    """The X.509-SVID stream when a target needs one (a reload on the same agent keeps
    the previous one), and the list its rotations are told to."""
    rotation: list[Callable[[set[str]], None]] = []
    if given is not None or not any(t.source == "x509" for t in config.targets):
        return given, rotation
    if previous is not None and previous.x509 is not None:
        previous.rotation_listeners.clear()
        return previous.x509, previous.rotation_listeners

    def rotated(spiffe_ids: set[str]) -> None:
        for listen in list(rotation):
            listen(spiffe_ids)

    return X509SvidSource(config.workload_api.socket, timeout=config.workload_api.timeout,
                          now=clock.time, monotonic=clock.monotonic, on_up=on_up,
                          on_rotated=rotated), rotation


def _take_over(services: list[Service], previous: Daemon | None
               ) -> tuple[list[Service], frozenset[int], list[Service]]:
    """Each new service a running one of `previous` can serve instead (it adopts it);
    returns the services, the ids of those already running, and the previous ones no
    new service took (to be stopped)."""
    if previous is None:
        return services, frozenset(), []
    free = list(previous.services)
    chosen: list[Service] = []
    for service in services:
        old = next((s for s in free if s.adopt(service)), None)
        if old is not None:
            free.remove(old)
        chosen.append(old or service)
    running = frozenset(id(s) for s in chosen if s not in services)
    return chosen, running, free


def _tell(listeners: Sequence[Callable[[bool], None]], up: bool) -> None:
    for listen in listeners:
        listen(up)


def clock_skew(metrics: Metrics, clock: Clock) -> ClockSkew:
    """The clouds' clock, exported live per service as `clock_skew_seconds`."""
    return ClockSkew(lambda service, skew: metrics.clock_skew.labels(service).set_function(skew),
                     wall=clock.time, monotonic=clock.monotonic)


def served_target(target: TargetConfig) -> ServedTarget:
    """A target as the gRPC API serves it (its final cloud says how its material goes)."""
    cloud = cloud_of(target.final)
    return ServedTarget(name=target.name, allowed_callers=target.allowed_callers,
                        proto_cloud=cloud.proto_cloud, proto_field=cloud.proto_field)


def credential_directory(outputs: OutputsConfig,
                         targets: Sequence[TargetConfig]) -> CredentialDirectory:
    """The directory with every target's files, as its final cloud describes them."""
    out = outputs.directory
    return CredentialDirectory(
        out, allow_non_tmpfs=outputs.allow_non_tmpfs,
        files=target_files(targets, out),
        shared=[f for c in CLOUDS.values() for f in c.shared_files(
            [t for t in targets if t.final.cloud == c.name])],
        jwt_targets=[t.name for t in targets if t.jwt_file],
        x509_targets=[t.name for t in targets if t.x509_files],
        subdirs=list(CLOUDS))


def _fleet(config: Config, clock: Clock, metrics: Metrics
           ) -> tuple[str, Budgets, Coalescer | None]:
    """This node's name (the refresh spread's seed), the quota scopes' budgets, and the
    coalescer of identical exchanges when asked for."""
    fleet = config.refresh.fleet
    node = fleet.node_id or default_node_id()
    budgets = Budgets(BudgetConfig(fleet_size=fleet.fleet_size, scope_rates=fleet.scope_rates),
                      clock=clock, fill=lambda scope: seed(node, scope), observer=metrics)
    return node, budgets, (Coalescer(clock.monotonic) if fleet.coalesce else None)


def _reader(config: Config, verifier: CallerVerifier, store: CredentialStore,
            clock: Clock) -> ReaderServer:
    """The reader socket beside the gRPC one: the targets' files, under gRPC's rules."""
    readable = {t.name: served_target(t) for t in config.targets}
    return ReaderServer(
        Path(reader_socket(urlsplit(config.grpc.socket).path)), config.grpc.socket_mode,
        target_files(config.targets, config.outputs.directory),
        access=Access(readable, verifier), status=store.get, now=clock.monotonic)


def target_files(targets: Sequence[TargetConfig], out: Path) -> dict[str, list[TargetFile]]:
    """Every target's files, as its final cloud describes them."""
    return {t.name: cloud_of(t.final).files(t, out) for t in targets}


def use_worker_threads(config: Config) -> None:
    """Blocking SDK calls run in threads: size the pool to the refresh concurrency."""
    workers = config.refresh.concurrency + 4
    asyncio.get_running_loop().set_default_executor(
        concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="io"))


def _prepare(daemon: Daemon) -> None:
    """Check the directory, then take back what a previous run left that is still valid."""
    os.umask(0o077)
    daemon.directory.prepare()
    now = daemon.clock.time()
    out = daemon.config.outputs.directory
    if daemon.reloaded:  # a reload keeps what it kept in memory; files of a changed
        return           # target are that config's, not this one's
    targets = list(daemon.config.targets)
    for t in targets:
        credential = cloud_of(t.final).recover(out, t, now=now, mono=daemon.clock.monotonic())
        if credential is not None:
            daemon.scheduler.recovered(credential)
    for name, svid in recover_svids(out, targets, now, daemon.clock.monotonic()).items():
        daemon.redactor.add(svid.token)
        daemon.store.svid_updated(name, svid)


async def serve(daemon: Daemon, stop: asyncio.Event) -> None:
    """Run until `stop` is set. Raises OutputError when the directory is unusable.

    At the end the listeners and the source are stopped, unless `daemon.handover` was
    set first: then they keep serving the store while the next generation is built."""
    _prepare(daemon)
    started: list[Service] = [s for s in daemon.services if id(s) in daemon.running]
    try:
        for service in daemon.services:
            if id(service) in daemon.running:
                continue
            service.start()
            started.append(service)
            log.info("serving %s", service.describe())
    except BaseException:
        _stop(started)
        daemon.close_sources()
        raise
    log.info("spiffe-bridge running: %d target(s), outputs in %s",
             len(daemon.config.targets), daemon.config.outputs.directory)
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(daemon.scheduler.run()),
                     group.create_task(daemon.writer.run())]
            if daemon.workloads is not None:
                tasks.append(group.create_task(daemon.workloads.run()))
            if isinstance(daemon.source, WorkloadApiSource):
                tasks.append(group.create_task(_keep_bundles_watched(daemon.source)))
            await stop.wait()
            for t in tasks:
                t.cancel()
    except BaseExceptionGroup as failed:  # one clear error, not a group, for the CLI
        raise _first(failed) from None  # it keeps its own cause; the group is noise
    finally:
        daemon.store.unsubscribe(daemon.writer.notify)
        if daemon.limits is not None:
            daemon.limits.close()
        if daemon.budgets is not None:
            daemon.budgets.close()
        if not daemon.handover:
            _stop(started)
            daemon.close_sources()
            log.info("spiffe-bridge stopped")


async def _keep_bundles_watched(source: WorkloadApiSource) -> None:
    """The bundle stream from the start and after it ends, not only at the next SVID
    fetch: callers are verified with current keys (real time: nothing to simulate). A
    check in flight is waited for when cancelled, so the source is never closed under a
    connection being made."""
    loop = asyncio.get_running_loop()
    while True:
        check = loop.run_in_executor(None, source.watch_bundles)
        try:
            watching = await asyncio.shield(check)
        except asyncio.CancelledError:
            await asyncio.wait([check])
            raise
        await asyncio.sleep(BUNDLE_RECHECK if watching else BUNDLE_RETRY)


def _first(group: BaseExceptionGroup[BaseException]) -> BaseException:
    first = group.exceptions[0]
    return _first(first) if isinstance(first, BaseExceptionGroup) else first


def _stop(services: list[Service]) -> None:
    for service in reversed(services):
        try:
            service.stop()
        except Exception:  # one stuck server must not keep the others up
            log.exception("stopping %s failed", service.describe())


async def run_once(daemon: Daemon) -> list[TargetStatus]:
    """Refresh every target once and write every output (`once`, init containers)."""
    _prepare(daemon)
    try:
        statuses = await daemon.scheduler.refresh_all_once()
        failures = await daemon.writer.flush()
    finally:
        daemon.close_sources()
        if daemon.limits is not None:
            daemon.limits.close()
        if daemon.budgets is not None:
            daemon.budgets.close()
    if failures:
        raise failures[0].error
    return statuses
