"""SIGHUP reloads the config file of a running daemon; `exit_on_permanent_failure` turns a
permanent refresh failure into exit 1 (init containers)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from bridge.devstack import DEMO_ROLE_ARN, DevStack
from tests.conftest import WriteConfig

pytestmark = pytest.mark.integration


def _wait_for(check: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"{what}: not within {timeout}s")


def _metric(port: int, line: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
            return line.encode() in r.read()
    except OSError:
        return False


def _free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_sighup_rejects_a_bad_config_then_applies_a_good_one(
        stack: DevStack, write_config: WriteConfig, outdir: Path) -> None:
    """A bad file: a clear log line naming the key, the metric set, the old config keeps
    serving. A good file adding a target: it is refreshed, and the unchanged target keeps
    its credential (no second STS call for it)."""
    config_path = write_config()
    doc = yaml.safe_load(config_path.read_text())
    port = _free_port()
    doc["http"]["address"] = f"127.0.0.1:{port}"
    config_path.write_text(yaml.safe_dump(doc))
    proc = subprocess.Popen([sys.executable, "-m", "bridge", "run", "--config",
                             str(config_path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        _wait_for((outdir / "aws" / "demo.json").exists, "first credential")
        first = (outdir / "aws" / "demo.json").read_text()
        _wait_for(lambda: _metric(port, "spiffe_bridge_config_rejected 0.0"), "metrics up")

        broken = {**doc, "targets": [{**doc["targets"][0], "aws": {
            **doc["targets"][0]["aws"], "role_arn": "arn:aws:iam::1:role/short"}}]}
        config_path.write_text(yaml.safe_dump(broken))
        proc.send_signal(signal.SIGHUP)
        _wait_for(lambda: _metric(port, "spiffe_bridge_config_rejected 1.0"), "rejection")
        assert _metric(port, 'spiffe_bridge_config_reloads_total{result="rejected"} 1.0')
        assert proc.poll() is None
        assert (outdir / "aws" / "demo.json").read_text() == first

        second = {"name": "second", "aws": {"role_arn": DEMO_ROLE_ARN, "region": "us-east-1",
                                            "sts_endpoint": stack.aws_sts_url}}
        config_path.write_text(yaml.safe_dump({**doc, "targets": [*doc["targets"], second]}))
        proc.send_signal(signal.SIGHUP)
        _wait_for((outdir / "aws" / "second.json").exists, "the added target")
        _wait_for(lambda: _metric(port, "spiffe_bridge_config_rejected 0.0"), "recovery")
        assert _metric(port, 'spiffe_bridge_config_reloads_total{result="applied"} 1.0')
        assert (outdir / "aws" / "demo.json").read_text() == first
        assert len(stack.aws.issued) == 2  # demo once, second once: demo was carried over
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert "targets[0].aws.role_arn" in err
    assert "rejected" in err
    assert "Traceback" not in err


def test_exit_on_permanent_failure(stack: DevStack, write_config: WriteConfig) -> None:
    """AccessDenied (a role STS does not let us assume) is permanent: exit 1, one line."""
    config_path = write_config(aws={"role_arn": "arn:aws:iam::999999999999:role/nobody",
                                    "region": "us-east-1",
                                    "sts_endpoint": stack.aws_sts_url})
    doc = yaml.safe_load(config_path.read_text())
    doc["refresh"] = {"exit_on_permanent_failure": True}
    config_path.write_text(yaml.safe_dump(doc))
    del doc
    proc = subprocess.run([sys.executable, "-m", "bridge", "run", "--config",
                           str(config_path)], capture_output=True, text=True, timeout=60,
                          check=False)
    assert proc.returncode == 1, proc.stderr
    assert "exit_on_permanent_failure" in proc.stderr
    assert "access_denied" in proc.stderr
    assert "Traceback" not in proc.stderr
