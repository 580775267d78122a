"""Fixtures for the fault scenarios (RELIABILITY.md (a)): every test runs under the
never-expired checker (harness.ExpiryChecker), asserted clean at teardown."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from bridge.config import Config
from bridge.devstack import DevStack
from bridge.devstack.aws_sts import AwsStsEmulator
from bridge.devstack.gcp import GcpEmulator
from tests.integration.faults.harness import (
    ExpiryChecker,
    Issued,
    Judge,
    Scenario,
    VirtualTime,
    mint_on,
    target_doc,
    write_config,
)
from tests.running import RunningBridge

StartChecker = Callable[..., ExpiryChecker]
MakeScenario = Callable[..., Scenario]


@pytest.fixture
def expiry_checker() -> Iterator[StartChecker]:
    """start(bridge_or_config, aws=[sts...], gcp=[google...], judge=None) -> a running
    checker over what that bridge serves (for a `Config`: its files and gRPC socket, as
    served by a daemon process).

    At teardown every checker is stopped and must have made reads and recorded no
    expired, unknown or torn credential."""
    started: list[ExpiryChecker] = []

    def start(bridge: RunningBridge | Config, *, aws: Sequence[AwsStsEmulator] = (),
              gcp: Sequence[GcpEmulator] = (), judge: Judge | None = None) -> ExpiryChecker:
        if isinstance(bridge, RunningBridge):
            running = bridge
            checker = ExpiryChecker(running.config, Issued(aws, gcp), judge=judge,
                                    services=lambda: running.daemon.services)
        else:
            checker = ExpiryChecker(bridge, Issued(aws, gcp), judge=judge)
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
