"""The daemon as a real process: `dev` and `run` start, deliver, serve health, stop on signal."""

from __future__ import annotations

import json
import os
import signal
import urllib.request
from pathlib import Path

import boto3
import pytest
import yaml

from bridge.devstack import DevStack
from tests.conftest import WriteConfig
from tests.support.process import bridge_cli, start_bridge, stop, with_http_port
from tests.support.wait import wait_for

pytestmark = pytest.mark.integration


def test_dev_runs_the_demo_until_ctrl_c(short_dir: Path) -> None:
    """`spiffe-bridge dev` prints where the credentials are; they load in boto3; SIGINT exits 0."""
    proc = start_bridge("dev", "--workdir", str(short_dir))
    try:
        config_path = short_dir / "bridge.yaml"
        wait_for(config_path.exists, "the dev config")
        config = yaml.safe_load(config_path.read_text())
        creds = Path(config["outputs"]["directory"]) / "aws" / "credentials"
        wait_for(creds.exists, "the credentials file")
        os.environ["AWS_SHARED_CREDENTIALS_FILE"] = str(creds)
        try:
            session = boto3.session.Session(profile_name="demo")
            frozen = session.get_credentials().get_frozen_credentials()  # type: ignore[union-attr]
        finally:
            del os.environ["AWS_SHARED_CREDENTIALS_FILE"]
        assert frozen.access_key.startswith("ASIA")
        address = config["http"]["address"]
        def ready() -> bool:
            try:
                with urllib.request.urlopen(f"http://{address}/readyz", timeout=5) as r:
                    return bool(json.loads(r.read())["ready"])
            except OSError:
                return False

        wait_for(ready, "/readyz ready")
        with urllib.request.urlopen(f"http://{address}/readyz", timeout=5) as r:
            body = json.loads(r.read())
        states = {name: t["state"] for name, t in body["targets"].items()}
        assert states == {"demo": "fresh", "demo-gcp": "fresh", "demo-aws-to-gcp": "fresh",
                      "demo-azure": "fresh", "demo-aws-to-azure": "fresh"}
        gcp_token = Path(config["outputs"]["directory"]) / "gcp" / "demo-gcp.token"
        assert gcp_token.read_text().startswith("ya29.")
    finally:
        code, out, err = stop(proc, signal.SIGINT)
    assert code == 0, err
    assert "AWS_SHARED_CREDENTIALS_FILE" in out
    assert "Traceback" not in err
    assert not creds.exists(), "dev left its credentials behind"


def test_run_serves_metrics_and_stops_cleanly_on_sigterm(stack: DevStack,
                                                          write_config: WriteConfig,
                                                          outdir: Path) -> None:
    """`run`: credentials written, /metrics and /healthz answer, SIGTERM exits 0, no temp left."""
    config_path = write_config()
    port = with_http_port(config_path)
    proc = start_bridge("run", "--config", str(config_path))
    try:
        wait_for((outdir / "aws" / "demo.json").exists, "the first credential")

        def metrics_up() -> bool:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
                    return b'spiffe_bridge_credential_state{state="fresh",target="demo"} 1.0' in (
                        r.read())
            except OSError:
                return False

        wait_for(metrics_up, "/metrics up")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
            assert json.loads(r.read())["live"] is True
    finally:
        code, _, err = stop(proc)
    assert code == 0, err
    leftovers = [p for p in outdir.rglob("*") if ".tmp." in p.name]
    assert leftovers == []
    assert "spiffe-bridge stopped" in err


def test_run_with_an_unusable_directory_exits_1_with_a_clear_message(
        write_config: WriteConfig, short_dir: Path) -> None:
    """A non-tmpfs output directory is refused at start: exit 1, one line, no traceback."""
    config_path = write_config()
    doc = yaml.safe_load(config_path.read_text())
    doc["outputs"]["directory"] = str(Path("/var/tmp") / short_dir.name)
    config_path.write_text(yaml.safe_dump(doc))
    proc = bridge_cli("run", "--config", str(config_path), timeout=30)
    assert proc.returncode == 1
    assert "tmpfs" in proc.stderr
    assert "Traceback" not in proc.stderr
