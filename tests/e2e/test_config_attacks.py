"""Config files an attacker (or a slip) shapes against `check` and `run` (issue 13, items
8 and 9): an endpoint that looks like loopback to one URL parser and is another host to
the HTTP client, an alias bomb (also sent by SIGHUP), duplicate keys, and a config file
anyone may write."""

from __future__ import annotations

import signal
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from bridge.devstack import DevStack
from tests.conftest import WriteConfig
from tests.support.configs import CALLER
from tests.support.process import bridge_cli, start_bridge, stop, with_http_port
from tests.support.wait import wait_for

pytestmark = pytest.mark.integration

# A few lines that expand to 10**9 values (the billion laughs, in YAML).
BOMB = "".join(
    f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 10) if i else ', '.join(['lol'] * 10)}]\n"
    for i in range(9))


def _with(config: Path, text: str) -> None:
    config.write_text(config.read_text() + text)


@pytest.mark.parametrize("endpoint", [
    "http://sts.example.com:80\\@127.0.0.1:1/",  # urllib3 (botocore) connects to example.com
    "http://127.0.0.1:1@sts.example.com/",
    "https://user:secret@sts.amazonaws.com/",
], ids=["backslash-userinfo", "loopback-as-userinfo", "userinfo-https"])
def test_check_refuses_an_endpoint_the_client_would_reach_elsewhere(
        write_config: WriteConfig, stack: DevStack, endpoint: str) -> None:
    """`check` judges the host urllib3 connects to: exit 2 naming the key."""
    config = write_config(aws={"role_arn": "arn:aws:iam::123456789012:role/demo",
                               "region": "us-east-1", "sts_endpoint": endpoint})
    proc = bridge_cli("check", "--config", str(config), timeout=30)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "targets[0].aws.sts_endpoint: " in proc.stderr
    assert "Traceback" not in proc.stderr


def test_check_refuses_an_alias_bomb_at_once(write_config: WriteConfig) -> None:
    """A billion-laughs value where a duration is read: refused in seconds, not hung."""
    config = write_config()
    doc = config.read_text().replace("timeout: 5s", "timeout: *l8")
    config.write_text(BOMB + doc)
    started = time.monotonic()
    proc = bridge_cli("check", "--config", str(config), timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert "expands to more than" in proc.stderr
    assert time.monotonic() - started < 30
    assert len(proc.stderr) < 2000


def test_sighup_with_an_alias_bomb_is_rejected_and_the_daemon_stays_small(
        write_config: WriteConfig, outdir: Path) -> None:
    """The bomb sent by SIGHUP: the reload is rejected, the daemon keeps serving and its
    memory does not grow (it reached 1.5 GB and MemoryError before)."""
    config = write_config()
    port = with_http_port(config)
    good = config.read_text()
    proc = start_bridge("run", "--config", str(config))
    try:
        wait_for((outdir / "aws" / "demo.json").exists, "first credential")
        config.write_text(BOMB + good.replace("timeout: 5s", "timeout: *l8"))
        proc.send_signal(signal.SIGHUP)

        def rejected() -> bool:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics",
                                            timeout=2) as r:
                    return b"spiffe_bridge_config_rejected 1.0" in r.read()
            except OSError:
                return False

        wait_for(rejected, "the reload rejected", timeout=30)
        assert proc.poll() is None
        rss_kb = int(next(line.split()[1] for line in
                          Path(f"/proc/{proc.pid}/status").read_text().splitlines()
                          if line.startswith("VmRSS:")))
        assert rss_kb < 400_000, rss_kb
    finally:
        code, _, err = stop(proc)
    assert code == 0, err
    assert "expands to more than" in err
    assert "Traceback" not in err


def test_check_refuses_a_duplicate_key_naming_its_path(write_config: WriteConfig) -> None:
    """`allowed_callers` twice in one target: an error naming the key, not last-one-wins."""
    config = write_config(allowed_callers=[CALLER])
    text = config.read_text()
    doc = yaml.safe_load(text)
    assert doc["targets"][0]["allowed_callers"] == [CALLER]
    assert "  name: demo\n" in text
    config.write_text(text.replace("  name: demo\n", "  name: demo\n  allowed_callers:\n"
                                   "  - spiffe://example.org/anyone\n", 1))
    proc = bridge_cli("check", "--config", str(config), timeout=30)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "targets[0].allowed_callers: duplicate key" in proc.stderr


def test_check_and_run_warn_about_a_config_file_others_can_write(
        write_config: WriteConfig, outdir: Path) -> None:
    """Mode 0666: `check` still passes, with one warning line naming the file; `run`
    logs the same warning."""
    config = write_config()
    config.chmod(0o666)
    proc = bridge_cli("check", "--config", str(config), timeout=30)
    assert proc.returncode == 0, proc.stderr
    warnings = [line for line in proc.stderr.splitlines() if "writable by" in line]
    assert len(warnings) == 1, proc.stderr
    assert str(config) in warnings[0]
    assert "group and others" in warnings[0]
    run = start_bridge("run", "--config", str(config))
    try:
        wait_for((outdir / "aws" / "demo.json").exists, "first credential")
    finally:
        code, _, err = stop(run)
    assert code == 0, err
    assert f"{config} is writable by group and others" in err
