"""SIGHUP reloads the config file of a running daemon; `exit_on_permanent_failure` turns a
permanent refresh failure into exit 1 (init containers)."""

from __future__ import annotations

import signal
import urllib.request
from pathlib import Path

import pytest
import yaml

from bridge.devstack import DEMO_ROLE_ARN, DevStack
from tests.conftest import WriteConfig
from tests.support.process import bridge_cli, start_bridge, with_http_port
from tests.support.wait import wait_for

pytestmark = pytest.mark.integration


def _metric(port: int, line: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
            return line.encode() in r.read()
    except OSError:
        return False


def test_sighup_rejects_a_bad_config_then_applies_a_good_one(
        stack: DevStack, write_config: WriteConfig, outdir: Path) -> None:
    """A bad file: a clear log line naming the key, the metric set, the old config keeps
    serving. A good file adding a target: it is refreshed, and the unchanged target keeps
    its credential (no second STS call for it)."""
    config_path = write_config()
    port = with_http_port(config_path)
    doc = yaml.safe_load(config_path.read_text())
    proc = start_bridge("run", "--config", str(config_path))
    try:
        wait_for((outdir / "aws" / "demo.json").exists, "first credential")
        first = (outdir / "aws" / "demo.json").read_text()
        wait_for(lambda: _metric(port, "spiffe_bridge_config_rejected 0.0"), "metrics up")

        broken = {**doc, "targets": [{**doc["targets"][0], "aws": {
            **doc["targets"][0]["aws"], "role_arn": "arn:aws:iam::1:role/short"}}]}
        config_path.write_text(yaml.safe_dump(broken))
        proc.send_signal(signal.SIGHUP)
        wait_for(lambda: _metric(port, "spiffe_bridge_config_rejected 1.0"), "rejection")
        assert _metric(port, 'spiffe_bridge_config_reloads_total{result="rejected"} 1.0')
        assert proc.poll() is None
        assert (outdir / "aws" / "demo.json").read_text() == first

        second = {"name": "second", "aws": {"role_arn": DEMO_ROLE_ARN, "region": "us-east-1",
                                            "sts_endpoint": stack.aws_sts_url}}
        config_path.write_text(yaml.safe_dump({**doc, "targets": [*doc["targets"], second]}))
        proc.send_signal(signal.SIGHUP)
        wait_for((outdir / "aws" / "second.json").exists, "the added target")
        wait_for(lambda: _metric(port, "spiffe_bridge_config_rejected 0.0"), "recovery")
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
    proc = bridge_cli("run", "--config", str(config_path), timeout=60)
    assert proc.returncode == 1, proc.stderr
    assert "exit_on_permanent_failure" in proc.stderr
    assert "access_denied" in proc.stderr
    assert "Traceback" not in proc.stderr
