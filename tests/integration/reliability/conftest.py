"""Fixtures for the reliability suite.

- the fault scenarios (RELIABILITY.md (a)): every test runs under the never-expired
  checker (`tests.support.expiry.ExpiryChecker`), asserted clean at teardown;
- the crash and malformed-answer tests: one fake agent + clouds per module, reset per test.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from bridge.config import Config
from bridge.devstack import DEMO_ROLE_ARN, DEMO_SERVICE_ACCOUNT, GCP_PROVIDER, DevStack, Identity
from bridge.devstack.aws import AwsStsEmulator
from bridge.devstack.gcp import GcpEmulator
from tests.support.expiry import (
    ExpiryChecker,
    HostOffsets,
    Issued,
    Judge,
    MakeScenario,
    RealTime,
    Scenario,
    StartChecker,
    VirtualTime,
    mint_on,
    target_doc,
    write_config,
)
from tests.support.running import RunningBridge

DEMO = "spiffe://example.org/demo"
OTHER = "spiffe://example.org/other"


@pytest.fixture(scope="module")
def module_dir() -> Iterator[Path]:
    """A short directory under /tmp (AF_UNIX paths are limited to 107 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="sbr-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def module_outdir() -> Iterator[Path]:
    base = Path(tempfile.mkdtemp(prefix="sbr-out-", dir="/dev/shm"))
    yield base / "creds"
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def agent(module_dir: Path) -> Iterator[DevStack]:
    """A started dev stack whose agent holds two identities (the bridge asks for DEMO)."""
    with DevStack(module_dir / "stack", identities=(DEMO, Identity(OTHER, hint="other"))) as s:
        yield s


@pytest.fixture
def honest_agent(agent: DevStack) -> Iterator[DevStack]:
    """The module's stack with every fault switch off and no recorded requests, before
    and after the test; the log handler an in-process `main()` installed (on this test's
    captured stderr, closed afterwards) is taken off again."""
    def clean() -> None:
        agent.workload.faults.reset()
        agent.aws.clear_requests()
        agent.gcp.clear_requests()
    clean()
    yield agent
    clean()
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, "_spiffe_bridge", False)]:
        root.removeHandler(handler)


@pytest.fixture(scope="module")
def two_cloud_config(agent: DevStack, module_dir: Path, module_outdir: Path) -> Path:
    """An AWS and a GCP target, both asking for the DEMO identity."""
    doc = {
        "workload_api": {"socket": agent.workload_socket_uri, "timeout": "5s"},
        "outputs": {"directory": str(module_outdir)},
        "http": {"address": "127.0.0.1:0"},
        "grpc": {"socket": f"unix://{module_dir}/bridge.sock"},
        "targets": [
            {"name": "aws", "spiffe_id": DEMO,
             "aws": {"role_arn": DEMO_ROLE_ARN, "region": "us-east-1",
                     "sts_endpoint": agent.aws_sts_url}},
            {"name": "gcp", "spiffe_id": DEMO,
             "gcp": {"workload_identity_provider": GCP_PROVIDER,
                     "service_account": DEMO_SERVICE_ACCOUNT,
                     "sts_endpoint": agent.gcp_sts_url,
                     "iam_credentials_endpoint": agent.gcp_iam_url}},
        ],
    }
    path = module_dir / "bridge.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.fixture
def expiry_checker() -> Iterator[StartChecker]:
    """start(bridge_or_config, aws=[sts...], gcp=[google...], judge=None, host=None) -> a
    running checker over what that bridge serves (for a `Config`: its files and gRPC
    socket, as served by a daemon process; `host`: that daemon's shifted clock).

    At teardown every checker is stopped and must have made reads and recorded no
    expired, unknown or torn credential."""
    started: list[ExpiryChecker] = []

    def start(bridge: RunningBridge | Config, *, aws: Sequence[AwsStsEmulator] = (),
              gcp: Sequence[GcpEmulator] = (), judge: Judge | None = None,
              host: HostOffsets | None = None) -> ExpiryChecker:
        issued = Issued(aws, gcp, (judge or RealTime()).now)
        if isinstance(bridge, RunningBridge):
            running = bridge
            checker = ExpiryChecker(running.config, issued, judge=judge,
                                    services=lambda: running.daemon.services)
        else:
            checker = ExpiryChecker(bridge, issued, judge=judge, host=host)
        started.append(checker.start())
        return checker

    yield start
    for checker in started:
        checker.stop()
    for checker in started:
        print(f"expiry checker: {checker.summary()}")
        checker.assert_clean()


@pytest.fixture
def scenario(short_dir: Path, outdir: Path,
             expiry_checker: StartChecker) -> Iterator[MakeScenario]:
    """make(kinds=("aws",), *, virtual=False, metadata=False, agent=True, deliver=True,
    directory=None, timeout="5s", targets=None) -> a running Scenario.

    - `kinds`: "aws" (demo role) and/or "gcp" (demo service account) targets, named so;
      `targets` replaces them with explicit target documents (a function of the stack).
    - `virtual`: the daemon and both cloud emulators run on one FakeClock
      (`scenario.vt`), and the fake agent mints SVIDs on it.
    - `metadata`: AWS targets are served on the container and IMDS endpoints, the GCP
      target on GCE.
    - `agent=False`: the Workload API is not running when the daemon starts.
    - `deliver`: wait for every target's first credential before returning.
    - `prepare(stack)`: runs after the stack started, before the daemon does.
    """
    made: list[tuple[Scenario, DevStack]] = []

    def make(kinds: Sequence[str] = ("aws",), *, virtual: bool = False, metadata: bool = False,
             agent: bool = True, deliver: bool = True, directory: Path | None = None,
             timeout: str = "5s",
             targets: Callable[[DevStack], list[dict[str, Any]]] | None = None,
             prepare: Callable[[DevStack], None] | None = None) -> Scenario:
        vt = VirtualTime() if virtual else None
        stack = DevStack(short_dir / f"stack{len(made)}")
        if vt is not None:
            stack.aws = AwsStsEmulator(clock=vt.now)
            stack.gcp = GcpEmulator(clock=vt.now)
        stack.start()
        try:
            if vt is not None:
                mint_on(stack, vt.now)
            if not agent:
                stack.workload.stop(grace=0)
            if prepare is not None:
                prepare(stack)
            docs = targets(stack) if targets else [target_doc(k, stack, metadata=metadata)
                                                   for k in kinds]
            path = write_config(short_dir / "bridge.yaml", stack, directory or outdir, docs,
                                metadata=metadata, timeout=timeout)
            bridge = RunningBridge(path, clock=vt.clock) if vt else RunningBridge(path)
        except BaseException:
            stack.stop()
            raise
        if vt is not None:
            tasks = {f"refresh:{t.name}" for t in bridge.config.targets}
            tasks |= {f"jwt:{t.name}" for t in bridge.config.targets if t.jwt_file}
            vt.attach(bridge, tasks)
        checker = expiry_checker(bridge, aws=[stack.aws], gcp=[stack.gcp], judge=vt)
        world = Scenario(stack=stack, bridge=bridge, checker=checker, config_path=path, time=vt)
        made.append((world, stack))
        if deliver:
            if vt is not None:
                vt.settle()
            bridge.wait_delivered()
            world.sweep()  # and the files are written
        return world

    yield make
    for world, stack in reversed(made):
        world.checker.stop()
        try:
            world.bridge.close()
        finally:
            stack.stop()
