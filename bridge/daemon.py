"""Assembly: the one place where configuration becomes running objects.

`build` wires config to source, hops, pipelines, store, outputs and metrics; `serve`
runs them until a stop event, `run_once` refreshes everything once. Nothing here runs
at import time, and every collaborator can be injected (clock, registry, source).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from prometheus_client import CollectorRegistry

from bridge.clock import Clock, SystemClock
from bridge.config import Config
from bridge.exchangers.chain import build_hops
from bridge.grpc_api.callers import CallerVerifier
from bridge.grpc_api.server import GrpcService
from bridge.health import HealthServer
from bridge.logs import Redactor
from bridge.metadata import metadata_services
from bridge.metrics import Metrics
from bridge.model import TargetStatus
from bridge.outputs.files import CredentialDirectory, recover, recover_svids
from bridge.outputs.writer import OutputWriter
from bridge.pipeline import TargetPipeline
from bridge.scheduler import Scheduler
from bridge.skew import ClockSkew
from bridge.sources import SvidSource
from bridge.sources.workload_api import WorkloadApiSource
from bridge.store import CredentialStore

log = logging.getLogger(__name__)


class Service(Protocol):
    """Something that serves the store to readers (HTTP health, gRPC, metadata): started
    after recovery, stopped before the source closes. Readers never trigger a refresh."""

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def describe(self) -> str: ...


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


def build(config: Config, *, clock: Clock | None = None,
          registry: CollectorRegistry | None = None, redactor: Redactor | None = None,
          source: SvidSource | None = None, serve_http: bool = True,
          serve_grpc: bool = True, metrics: Metrics | None = None,
          carried: Mapping[str, TargetStatus] | None = None) -> Daemon:
    """Wire a daemon from config. Must be called inside the event loop that will run it."""
    clock = clock or SystemClock()
    metrics = metrics or Metrics(registry or CollectorRegistry())
    redactor = redactor or Redactor()
    # Two generations of 4 secrets and an SVID per target: nothing live is ever evicted.
    redactor.reserve(16 * len(config.targets) + 256)
    if source is None:
        metrics.workload_api_up.set(0)
        source = WorkloadApiSource(
            config.workload_api.socket, timeout=config.workload_api.timeout, now=clock.time,
            on_up=lambda up: metrics.workload_api_up.set(1 if up else 0))
    names = [t.name for t in config.targets]
    skew = ClockSkew(lambda service, seconds: metrics.clock_skew.labels(service).set(seconds))
    store = CredentialStore(names)
    kept = {n: s for n, s in (carried or {}).items() if n in names}
    for status in kept.values():
        store.seed(status)
    pipelines = [
        TargetPipeline(t, source=source,
                       hops=build_hops(t, timeout=config.workload_api.timeout, skew=skew),
                       monotonic=clock.monotonic, now=clock.time)
        for t in config.targets
    ]
    scheduler = Scheduler(pipelines, store=store, clock=clock, metrics=metrics,
                          redactor=redactor, concurrency=config.refresh.concurrency,
                          exit_on_permanent=config.refresh.exit_on_permanent_failure)
    directory = CredentialDirectory(
        config.outputs.directory, allow_non_tmpfs=config.outputs.allow_non_tmpfs,
        targets=config.targets)
    writer = OutputWriter(directory, snapshot=store.snapshot, clock=clock, metrics=metrics)
    store.subscribe(writer.notify)
    services: list[Service] = []
    if serve_grpc:
        verifier = CallerVerifier(source.jwt_bundles, audience=config.grpc.caller_audience,
                                  now=clock.time)
        services.append(GrpcService(config.grpc, config.targets, store=store, now=clock.time,
                                    verifier=verifier, metrics=metrics))
    if serve_http:
        services.append(HealthServer(
            config.http_address, registry=metrics.registry, statuses=store.snapshot,
            now=clock.time, seconds_since_tick=lambda: clock.monotonic() - scheduler.last_tick))
    # Cloud-metadata listeners, one per configured `metadata.*` section (none by default).
    services.extend(metadata_services(config, store=store, clock=clock, metrics=metrics,
                                      redactor=redactor))
    return Daemon(config=config, clock=clock, metrics=metrics, redactor=redactor, store=store,
                  source=source, scheduler=scheduler, directory=directory, writer=writer,
                  services=services, carried=frozenset(kept))


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
    targets = [t for t in daemon.config.targets if t.name not in daemon.carried]
    for name, credential in recover(daemon.config.outputs.directory, targets, now).items():
        daemon.redactor.add(*credential.secrets())
        status = daemon.store.recovered(name, credential)
        daemon.metrics.set_state(name, status.state)
        daemon.metrics.expiry.labels(name).set(credential.expires_at)
        log.info("recovered a valid credential for %s from the previous run (%.0fs left)",
                 name, credential.expires_at - now)
    for name, svid in recover_svids(daemon.config.outputs.directory, targets, now).items():
        daemon.redactor.add(svid.token)
        daemon.store.svid_updated(name, svid)


async def serve(daemon: Daemon, stop: asyncio.Event) -> None:
    """Run until `stop` is set. Raises OutputError when the directory is unusable."""
    _prepare(daemon)
    started: list[Service] = []
    try:
        for service in daemon.services:
            service.start()
            started.append(service)
            log.info("serving %s", service.describe())
    except BaseException:
        _stop(started)
        daemon.source.close()
        raise
    log.info("spiffe-bridge running: %d target(s), outputs in %s",
             len(daemon.config.targets), daemon.config.outputs.directory)
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(daemon.scheduler.run()),
                     group.create_task(daemon.writer.run())]
            await stop.wait()
            for t in tasks:
                t.cancel()
    except BaseExceptionGroup as failed:  # one clear error, not a group, for the CLI
        raise _first(failed) from None
    finally:
        _stop(started)
        daemon.source.close()
        log.info("spiffe-bridge stopped")


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
        daemon.source.close()
    if failures:
        raise failures[0].error
    return statuses
