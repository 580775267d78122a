"""The daemon's lifetime across SIGHUP: reload the config file, keep what still holds.

A reload that fails validation changes nothing: the running config keeps serving, the
problems are logged one per line with their key paths, and `config_rejected` is 1 until
a good file is loaded. A good, different config replaces the running daemon: targets
whose configuration is unchanged carry their credentials and schedule over (no new STS
call, no gap), the rest start fresh. Metrics live on one registry across generations.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path

from prometheus_client import CollectorRegistry

from bridge.app import daemon as d
from bridge.clock import SystemClock
from bridge.config import Config, load_config
from bridge.errors import ConfigError
from bridge.logs import Redactor
from bridge.metrics import Metrics
from bridge.serving.metadata import LocalTokens

log = logging.getLogger(__name__)


async def run_until_signalled(path: Path, config: Config, *, redactor: Redactor) -> None:
    """`run` and `dev`: serve until SIGTERM or SIGINT; SIGHUP reloads `path`."""
    d.use_worker_threads(config)
    stop, reload = asyncio.Event(), asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, reload.set)
    try:
        await supervise(path, config, stop=stop, reload=reload, redactor=redactor)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)


async def supervise(path: Path, config: Config, *, stop: asyncio.Event,
                    reload: asyncio.Event, redactor: Redactor,
                    registry: CollectorRegistry | None = None) -> None:
    """Serve `config` until `stop`; on `reload`, re-read `path` and apply it if valid."""
    metrics = Metrics(registry or CollectorRegistry())
    tokens = LocalTokens()  # the container endpoint's token survives every reload
    skew = d.clock_skew(metrics, SystemClock())  # and so does what we know of the clouds' clock
    daemon = d.build(config, redactor=redactor, metrics=metrics, tokens=tokens, skew=skew)
    while True:
        generation = asyncio.Event()
        serving = asyncio.create_task(d.serve(daemon, generation))
        new = await _until_change(path, daemon.config, stop=stop, reload=reload,
                                  serving=serving, metrics=metrics)
        daemon.handover = new is not None  # listeners keep serving while we switch
        generation.set()
        await serving
        if new is None:
            return
        old = daemon
        daemon = d.build(new, redactor=redactor, metrics=metrics, previous=old,
                         tokens=tokens, skew=skew)
        for service in old.retired:  # no new listener took it over
            service.stop()
        if daemon.source is not old.source:
            old.source.close()
        if old.x509 is not None and daemon.x509 is not old.x509:
            old.x509.close()
        if old.broker is not None and daemon.broker is not old.broker:
            old.broker.close()
        for gone in {t.name for t in old.config.targets} - {t.name for t in new.targets}:
            metrics.forget_target(gone)
        log.info("config reloaded from %s: %d target(s), %d kept as they were, %d "
                 "listener(s) kept open", path, len(new.targets), len(daemon.carried),
                 len(daemon.running))


async def _until_change(path: Path, current: Config, *, stop: asyncio.Event,
                        reload: asyncio.Event, serving: asyncio.Task[None],
                        metrics: Metrics) -> Config | None:
    """Wait for stop (None), a valid changed config (it), or the daemon failing (raise)."""
    while True:
        waits = {asyncio.ensure_future(stop.wait()), asyncio.ensure_future(reload.wait())}
        done, _ = await asyncio.wait({*waits, serving}, return_when=asyncio.FIRST_COMPLETED)
        for w in waits:
            w.cancel()
        if serving in done:
            serving.result()  # raises what stopped it
            return None
        if stop.is_set():
            return None
        reload.clear()
        new = _load(path, metrics)
        if new is None:
            continue
        if new == current:
            metrics.config_reloads.labels("unchanged").inc()
            log.info("SIGHUP: %s is unchanged", path)
            continue
        metrics.config_reloads.labels("applied").inc()
        return new


def _load(path: Path, metrics: Metrics) -> Config | None:
    try:
        config = load_config(path)
    except ConfigError as exc:
        metrics.config_reloads.labels("rejected").inc()
        metrics.config_rejected.set(1)
        log.error(  # noqa: TRY400 - a config problem, not a crash: no traceback
            "SIGHUP: %s rejected, the running config stays (%d problem%s): %s", path,
            len(exc.problems), "" if len(exc.problems) == 1 else "s",
            "; ".join(str(p) for p in exc.problems))
        return None
    metrics.config_rejected.set(0)
    return config
