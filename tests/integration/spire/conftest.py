"""Fixtures: one real SPIRE deployment per session, and the bridge run against it.

- `spire_deployment` (session): spire-server, spire-agent, oidc-discovery-provider and
  the AWS/GCP emulators trusting SPIRE's issuer (see `_spire.py`). It takes a few
  seconds to start, so every test shares it; tests that stop or kill a component
  restart it themselves, and `spire` (function) restarts whatever a failed test left
  down before the next test runs.
- `bridge_config`: writes a bridge config pointing at the real agent's socket.
- `run_once`: the bridge's `once` in this process (bridge.daemon build + run_once) with a
  private metrics registry, for tests that read metrics and statuses directly.
- `bridge_process`: `python -m bridge run` as a child process, for tests that need the
  refresh loop; read through its /metrics and /readyz.

When a test fails, the tails of the SPIRE and bridge logs are attached to its report.
Binaries come from tests/tools/install-spire.sh; without them the tests skip, or fail
when CI=true.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from bridge.app import daemon as bridge_daemon
from bridge.config import load_config
from bridge.metrics import Metrics
from bridge.model import TargetStatus
from tests.support.process import start_bridge
from tests.support.spire import (
    ProcessExitedError,
    SpireDeployment,
    free_port,
    http_get,
    require_spire,
    wait_until,
)

_LOGS_KEY = pytest.StashKey[list[Callable[[], str]]]()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]
                              ) -> Iterator[None]:
    outcome = yield
    report: pytest.TestReport = outcome.get_result()  # type: ignore[attr-defined]
    if report.failed:
        for dump in item.stash.get(_LOGS_KEY, []):
            try:
                text = dump()
            except Exception as exc:  # a broken dump must not hide the failure
                text = f"(could not read logs: {exc!r})"
            report.sections.append((f"logs ({report.when})", text))


def _on_failure_dump(request: pytest.FixtureRequest, dump: Callable[[], str]) -> None:
    request.node.stash.setdefault(_LOGS_KEY, []).append(dump)


@pytest.fixture(scope="session")
def spire_deployment() -> Iterator[SpireDeployment]:
    binaries = require_spire()
    workdir = Path(tempfile.mkdtemp(prefix="sbs-", dir="/tmp"))
    deployment = SpireDeployment(binaries, workdir)
    try:
        deployment.start()
    except BaseException as exc:
        logs = deployment.logs()
        deployment.stop()
        shutil.rmtree(workdir, ignore_errors=True)
        pytest.fail(f"SPIRE did not start: {exc}\n{logs}")
    yield deployment
    deployment.stop()
    shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def spire(spire_deployment: SpireDeployment, request: pytest.FixtureRequest
          ) -> SpireDeployment:
    """The shared deployment, with every component running and both entries synced."""
    _on_failure_dump(request, spire_deployment.logs)
    spire_deployment.ensure_running()
    return spire_deployment


WriteBridgeConfig = Callable[..., Path]


@pytest.fixture
def bridge_config(spire: SpireDeployment, outdir: Path, short_dir: Path) -> WriteBridgeConfig:
    """Write a bridge config for `targets` on the real agent; returns its path."""

    def write(targets: list[dict[str, Any]], *, http_address: str = "127.0.0.1:0",
              timeout: str = "10s") -> Path:
        doc = {
            "workload_api": {"socket": spire.agent_socket_uri, "timeout": timeout},
            "outputs": {"directory": str(outdir)},
            "http": {"address": http_address},
            # never the default /run/spiffe-bridge socket: other runs may hold it
            "grpc": {"socket": f"unix://{short_dir}/bridge.sock"},
            "targets": targets,
        }
        path = short_dir / "bridge.yaml"
        path.write_text(yaml.safe_dump(doc))
        return path

    return write


@dataclass
class OnceResult:
    statuses: dict[str, TargetStatus]
    metrics: Metrics

    def sample(self, name: str, **labels: str) -> float | None:
        return self.metrics.sample(f"spiffe_bridge_{name}", **labels)


RunOnce = Callable[[Path], OnceResult]


@pytest.fixture
def run_once() -> RunOnce:
    """`spiffe-bridge once` in-process: bridge.daemon.build + run_once, own registry."""

    def once(config_path: Path) -> OnceResult:
        config = load_config(config_path)
        metrics = Metrics(CollectorRegistry())

        async def go() -> list[TargetStatus]:
            bridge_daemon.use_worker_threads(config)
            daemon = bridge_daemon.build(config, metrics=metrics)
            return await bridge_daemon.run_once(daemon)

        statuses = asyncio.run(go())
        return OnceResult({s.name: s for s in statuses}, metrics)

    return once


@dataclass
class BridgeProcess:
    """`python -m bridge run` with its log in a file; read through /metrics and /readyz."""

    config: Path
    address: str
    log: Path
    proc: subprocess.Popen[str] | None = field(default=None)

    def start(self) -> BridgeProcess:
        self.proc = start_bridge("run", "--config", str(self.config), "--log-format", "json",
                                 "--log-level", "DEBUG", log=self.log)
        wait_until(self._serving, 30, "the bridge to serve /metrics")
        return self

    def _serving(self) -> bool:
        self.check_alive()
        status, _ = http_get(f"http://{self.address}/healthz")
        return status == 200

    def check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise ProcessExitedError(f"bridge exited {self.proc.returncode}:\n{self.tail()}")

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """Every sample, keyed by (name, sorted labels)."""
        self.check_alive()
        status, body = http_get(f"http://{self.address}/metrics")
        assert status == 200, body[:500]
        samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        for family in text_string_to_metric_families(body.decode()):
            for s in family.samples:
                samples[(s.name, tuple(sorted(s.labels.items())))] = float(s.value)
        return samples

    def sample(self, name: str, **labels: str) -> float | None:
        return self.metrics().get((f"spiffe_bridge_{name}", tuple(sorted(labels.items()))))

    def readyz(self) -> tuple[int, dict[str, Any]]:
        self.check_alive()
        status, body = http_get(f"http://{self.address}/readyz")
        return status, dict(json.loads(body))

    def target(self, name: str) -> dict[str, Any]:
        return dict(self.readyz()[1]["targets"][name])

    def tail(self, chars: int = 6000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self) -> None:
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


StartBridge = Callable[[list[dict[str, Any]]], BridgeProcess]


@pytest.fixture
def bridge_process(bridge_config: WriteBridgeConfig, short_dir: Path,
                   request: pytest.FixtureRequest) -> Iterator[StartBridge]:
    """Start the bridge daemon on `targets`; stopped (SIGTERM) at teardown."""
    started: list[BridgeProcess] = []

    def start(targets: list[dict[str, Any]]) -> BridgeProcess:
        address = f"127.0.0.1:{free_port()}"
        config = bridge_config(targets, http_address=address)
        bridge = BridgeProcess(config, address, short_dir / f"bridge-{len(started)}.log")
        started.append(bridge)
        _on_failure_dump(request, lambda: f"---- bridge ({bridge.log}) ----\n{bridge.tail()}")
        return bridge.start()

    yield start
    for bridge in started:
        bridge.stop()


def wait_for_sample(bridge: BridgeProcess, name: str, predicate: Callable[[float], bool],
                    timeout: float, **labels: str) -> float:
    """Poll the bridge's /metrics until `name{labels}` satisfies `predicate`."""

    def check() -> float | None:
        value = bridge.sample(name, **labels)
        return value if value is not None and predicate(value) else None

    # 0.0 is a legitimate answer (workload_api_up == 0): wrap it so it counts as found.
    found = wait_until(lambda: (v,) if (v := check()) is not None else None, timeout,
                       f"{name}{labels} to satisfy the condition", interval=0.05)
    return found[0]
