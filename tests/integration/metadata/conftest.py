"""The daemon in-process (its own thread and event loop, the real `build` and `serve`)
against the dev stack, so a test can read its store while SDK subprocesses read its
metadata endpoints. Every run ends with a secrets check of everything it logged."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from bridge.app.daemon import Daemon, build, serve, use_worker_threads
from bridge.clouds.aws import AwsCredentials
from bridge.clouds.aws.container import ContainerServer
from bridge.config import load_config
from bridge.devstack import DEMO_ROLE_ARN, DevStack
from bridge.devstack.aws import MIN_DURATION, AwsStsEmulator
from bridge.logs import Redactor, pin_third_party_loggers
from bridge.model import Credential, TargetStatus
from bridge.serving.metadata import LoopbackServer
from tests.conftest import WriteConfig
from tests.support.values import trusting_sts
from tests.support.wait import wait_for

CLIENTS = Path(__file__).parents[2] / "support" / "metadata_clients.py"


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if record.exc_info:
            text += logging.Formatter().formatException(record.exc_info)
        self.lines.append(f"{record.name}: {text}")


@dataclass
class Bridge:
    daemon: Daemon
    history: list[Credential]
    logs: _Records
    stop: Callable[[], None]
    secrets: set[str] = field(default_factory=set)

    def service(self, kind: str) -> LoopbackServer:
        return next(s for s in self.daemon.services
                    if isinstance(s, LoopbackServer) and s.endpoint == kind)

    @property
    def container(self) -> ContainerServer:
        s = self.service("container")
        assert isinstance(s, ContainerServer)
        return s

    def status(self, name: str) -> TargetStatus:
        status = self.daemon.store.get(name)
        assert status is not None
        return status

    def credential(self, name: str) -> Credential | None:
        return self.status(name).valid_credential(time.monotonic())

    def keys(self, name: str) -> list[str]:
        """Access key IDs the store has held for `name`, in order."""
        return [c.material.access_key_id for c in self.history
                if c.target == name and isinstance(c.material, AwsCredentials)]

    def wait_for(self, check: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
        wait_for(check, what, timeout=timeout, detail=lambda: f"log tail: {self.logs.lines[-5:]}")

    def all_secrets(self) -> set[str]:
        values = set(self.secrets)
        for credential in self.history:
            values.update(credential.secrets())
        return {v for v in values if len(v) >= 8}


StartBridge = Callable[..., Bridge]


@pytest.fixture
def start_bridge(write_config: WriteConfig) -> Iterator[StartBridge]:
    """start(targets, metadata) -> a running in-process daemon; stopped at teardown,
    which then checks that no secret it ever held reached a log record."""
    started: list[Bridge] = []
    handler = _Records()
    root = logging.getLogger()
    bridge_logger = logging.getLogger("bridge")
    old_level = bridge_logger.level
    root.addHandler(handler)
    bridge_logger.setLevel(logging.DEBUG)
    pin_third_party_loggers()

    def start(targets: list[dict[str, Any]], metadata: Mapping[str, Any]) -> Bridge:
        path = write_config(targets=targets)
        doc = yaml.safe_load(path.read_text())
        doc["metadata"] = dict(metadata)
        path.write_text(yaml.safe_dump(doc))
        bridge = _run(path, handler)
        started.append(bridge)
        return bridge

    try:
        yield start
    finally:
        for bridge in started:
            bridge.stop()
        root.removeHandler(handler)
        bridge_logger.setLevel(old_level)
    for bridge in started:
        leaked = [s for s in bridge.all_secrets() if any(s in line for line in handler.lines)]
        assert not leaked, f"{len(leaked)} credential value(s) or token(s) reached the logs"
        assert bridge.history, "the run delivered nothing to check"
    assert any("bridge.refresh.scheduler: refreshed" in line for line in handler.lines), (
        "no daemon log was captured: the secrets check above would prove nothing")


def _run(path: Path, handler: _Records) -> Bridge:
    config = load_config(path)
    ready = threading.Event()
    box: dict[str, Any] = {}

    async def main() -> None:
        use_worker_threads(config)
        stop = asyncio.Event()
        daemon = build(config, redactor=Redactor())
        history: list[Credential] = []

        def record(_: str, status: TargetStatus) -> None:
            if status.credential is not None and status.credential not in history:
                history.append(status.credential)

        daemon.store.subscribe(record)
        box.update(daemon=daemon, history=history, stop=stop,
                   loop=asyncio.get_running_loop())
        task = asyncio.create_task(serve(daemon, stop))
        while not task.done() and not all(
                s.serving for s in daemon.services if isinstance(s, LoopbackServer)):
            await asyncio.sleep(0.01)
        ready.set()
        await task

    def run() -> None:
        try:
            asyncio.run(main())
        except BaseException as exc:
            box["error"] = exc
        finally:
            ready.set()

    thread = threading.Thread(target=run, name="bridge-under-test", daemon=True)
    thread.start()
    if not ready.wait(30) or "error" in box:
        raise AssertionError(f"the bridge did not start: {box.get('error')!r}")

    def stop() -> None:
        loop: asyncio.AbstractEventLoop = box["loop"]
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(box["stop"].set)
        thread.join(20)
        assert not thread.is_alive(), "the bridge did not stop"
        if "error" in box:
            raise box["error"]

    bridge = Bridge(daemon=box["daemon"], history=box["history"], logs=handler, stop=stop)
    with contextlib.suppress(StopIteration):
        bridge.secrets.add(bridge.container.token_file.read_text())
    return bridge


def short_lived_sts(stack: DevStack, lifetime: float) -> AwsStsEmulator:
    """An STS trusting the stack's issuer whose clock runs behind, so a 15-minute session
    (the shortest STS grants) has `lifetime` real seconds left: the bridge refreshes it
    after a quarter of that. GetCallerIdentity with those credentials still verifies
    (SigV4's 15-minute window leaves `lifetime` seconds of margin)."""
    return trusting_sts(stack, offset=-(MIN_DURATION - lifetime), short_lived=True)


StsFactory = Callable[[float], AwsStsEmulator]


@pytest.fixture
def sts_factory(stack: DevStack) -> Iterator[StsFactory]:
    made: list[AwsStsEmulator] = []

    def make(lifetime: float) -> AwsStsEmulator:
        made.append(short_lived_sts(stack, lifetime))
        return made[-1]

    yield make
    for sts in made:
        sts.stop()


def aws_target(name: str, sts: AwsStsEmulator, serve: list[str]) -> dict[str, Any]:
    return {"name": name, "serve": serve,
            "aws": {"role_arn": DEMO_ROLE_ARN, "region": "us-east-1", "duration": "15m",
                    "sts_endpoint": sts.url}}


@dataclass
class ClientRun:
    code: int
    lines: list[dict[str, Any]]
    stderr: str

    def first(self, key: str) -> dict[str, Any]:
        return next(line for line in self.lines if key in line)


def run_client(args: list[str], env: Mapping[str, str], home: Path,
               timeout: float = 60) -> ClientRun:
    """`metadata_clients.py` in a fresh interpreter whose environment is exactly `env` plus PATH
    and an empty HOME: no inherited AWS_*/GOOGLE_*/proxy variables, no ~/.aws."""
    home.mkdir(exist_ok=True)
    full = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home),
            "PYTHONDONTWRITEBYTECODE": "1", **env}
    proc = subprocess.run([sys.executable, str(CLIENTS), *args], env=full, text=True,
                          capture_output=True, timeout=timeout, check=False)
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    return ClientRun(proc.returncode, lines, proc.stderr)
