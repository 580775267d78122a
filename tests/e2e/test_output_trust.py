"""The output directory cannot be handed to the bridge by someone else (issue 13, item
11): a directory another uid owns or can write, a parent others can write, a FIFO
planted at an output path, and a symlinked parent re-pointed at a disk while running."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from bridge.devstack import DEMO_ROLE_ARN, DevStack, HttpFailure
from tests.conftest import WriteConfig
from tests.support.process import REPO, bridge_cli, clean_env, start_bridge, stop
from tests.support.require import unavailable
from tests.support.wait import wait_for

pytestmark = pytest.mark.integration
OTHER_UID = 4242


def _refused(config: Path, *words: str) -> str:
    """`run` exits 1 at once with one clear line (a hang or a start is a failure)."""
    try:
        proc = bridge_cli("run", "--config", str(config), timeout=40)
    except subprocess.TimeoutExpired:
        pytest.fail("the daemon accepted the directory and kept running")
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    for word in words:
        assert word in proc.stderr, proc.stderr
    return proc.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another uid needs root")
def test_a_directory_another_uid_owns_and_may_write_is_refused(
        write_config: WriteConfig, outdir: Path) -> None:
    """0777, owned by uid 4242 (it could swap in fake credentials): refused, not chmodded."""
    outdir.mkdir()
    os.chown(outdir, OTHER_UID, OTHER_UID)
    outdir.chmod(0o777)
    _refused(write_config(), "owned by uid 4242")
    assert outdir.stat().st_mode & 0o777 == 0o777
    assert not any(outdir.iterdir())


def test_a_parent_others_can_write_is_refused(write_config: WriteConfig,
                                             outdir: Path) -> None:
    """The parent is 0777 (not sticky): anyone could rename the directory and put theirs."""
    outdir.parent.chmod(0o777)
    _refused(write_config(), f"{outdir.parent} (a parent of {outdir}) is writable")


def test_a_fifo_planted_at_an_output_path_does_not_hang_start_up(
        stack: DevStack, write_config: WriteConfig, outdir: Path) -> None:
    """A FIFO at aws/demo.json and jwt/demo.jwt: recovery skips them (no blocking open),
    the daemon starts and writes; nothing is written through a FIFO."""
    for sub in ("aws", "jwt"):
        (outdir / sub).mkdir(parents=True, mode=0o700)
    os.mkfifo(outdir / "aws" / "demo.json", 0o600)
    os.mkfifo(outdir / "jwt" / "demo.jwt", 0o600)
    config = write_config(jwt_file=True)
    proc = start_bridge("run", "--config", str(config))
    try:
        wait_for((outdir / "aws" / "credentials").exists, "the credentials file", timeout=30)
    finally:
        code, _, err = stop(proc)
    assert code == 0, err
    assert "Traceback" not in err
    mode = (outdir / "aws" / "demo.json").lstat().st_mode  # left alone, or replaced whole
    assert stat.S_ISFIFO(mode) or (stat.S_ISREG(mode) and stat.S_IMODE(mode) == 0o600)


@pytest.fixture
def disk_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="sb-disk-", dir="/var/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_a_symlinked_parent_re_pointed_at_a_disk_gets_no_write(
        stack: DevStack, write_config: WriteConfig, outdir: Path, disk_dir: Path) -> None:
    """outputs.directory is <tmpfs>/link/creds. After start-up `link` is re-pointed at a
    directory on ext4: the next write is refused (checked on the open directory), so no
    credential reaches the disk."""
    base = outdir.parent
    (base / "real" / "creds").mkdir(parents=True, mode=0o700)
    (base / "link").symlink_to(base / "real")
    (disk_dir / "creds").mkdir(mode=0o700)
    config = write_config()
    doc = yaml.safe_load(config.read_text())
    doc["outputs"]["directory"] = str(base / "link" / "creds")
    config.write_text(yaml.safe_dump(doc))
    # The first exchanges are throttled, so the first write comes seconds after start-up.
    stack.aws.faults.fail_next("AssumeRoleWithWebIdentity", HttpFailure(400, "Throttling"),
                               times=4)
    log = base / "bridge.log"
    proc = start_bridge("run", "--config", str(config), log=log)
    try:
        wait_for(lambda: "spiffe-bridge running" in log.read_text(), "start-up", timeout=20)
        assert not stack.aws.issued
        (base / "link").unlink()
        (base / "link").symlink_to(disk_dir)
        wait_for(lambda: bool(stack.aws.issued), "the exchange", timeout=40)
        wait_for(lambda: "not tmpfs" in log.read_text(), "the refusal", timeout=20)
    finally:
        code, _, _ = stop(proc)
    text = log.read_text()
    assert code == 0, text
    assert "Traceback" not in text
    assert not (disk_dir / "creds" / "aws" / "demo.json").exists()
    assert not (disk_dir / "creds" / "aws" / "credentials").exists()


BRIDGE_UID = 4343  # the non-root bridge's own uid


def _as_uid(uid: int, *args: str) -> list[str]:
    """`spiffe-bridge ARGS` run as `uid`, on the system Python (the test interpreter may
    live where other uids cannot reach it) with this venv's packages and this checkout."""
    python = shutil.which("python3", path="/usr/bin:/bin")
    probe = subprocess.run([python or "python3", "-c", "import sys; print(sys.version_info[:2])"],
                           capture_output=True, text=True, check=False) if python else None
    if probe is None or probe.stdout.strip() != str(tuple(sys.version_info[:2])) or (
            os.geteuid() != 0 or shutil.which("setpriv") is None):
        message = ("a non-root bridge needs root (to switch uid), setpriv, and a system "
                   f"python{sys.version_info[0]}.{sys.version_info[1]} other uids can run")
        unavailable(message)
    return ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups",
            str(python), "-S", "-m", "bridge", *args]  # -S: not the system's packages


def _non_root_env() -> dict[str, str]:
    packages = sysconfig.get_paths()["purelib"]
    return {**clean_env(), "PYTHONPATH": os.pathsep.join([str(REPO), packages]),
            "HOME": "/nonexistent"}


@pytest.fixture
def open_base() -> Iterator[Path]:
    """A tmpfs directory any uid may traverse, for a bridge that is not root."""
    base = Path(tempfile.mkdtemp(prefix="sb-out-", dir="/dev/shm"))
    base.chmod(0o755)
    yield base
    shutil.rmtree(base, ignore_errors=True)


def _non_root_config(stack: DevStack, base: Path, outdir: Path) -> Path:
    run = base / "run"
    run.mkdir()
    os.chown(run, BRIDGE_UID, BRIDGE_UID)
    doc = {"workload_api": {"socket": stack.workload_socket_uri, "timeout": "5s"},
           "outputs": {"directory": str(outdir)},
           "http": {"address": "127.0.0.1:0"},
           "grpc": {"socket": f"unix://{run}/bridge.sock"},
           "targets": [{"name": "demo", "aws": {
               "role_arn": DEMO_ROLE_ARN, "region": "us-east-1",
               "sts_endpoint": stack.aws_sts_url}}]}
    config = base / "bridge.yaml"
    config.write_text(yaml.safe_dump(doc))
    config.chmod(0o644)
    return config


def test_a_non_root_bridge_refuses_a_directory_another_uid_planted(
        stack: DevStack, open_base: Path) -> None:
    """As uid 4343: a 0777 directory pre-created by uid 4242 is refused with one clear
    line and exit 1 (before this, a non-root bridge died with a traceback), and nothing
    is written into it."""
    planted = open_base / "creds"
    planted.mkdir()
    os.chown(planted, OTHER_UID, OTHER_UID)
    planted.chmod(0o777)
    config = _non_root_config(stack, open_base, planted)
    proc = subprocess.run(_as_uid(BRIDGE_UID, "run", "--config", str(config)),
                          capture_output=True, text=True, timeout=60, env=_non_root_env(),
                          check=False)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "owned by uid 4242" in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) <= 2, proc.stderr
    assert not any(planted.iterdir())


def test_a_non_root_bridge_serves_from_a_directory_it_owns(
        stack: DevStack, open_base: Path) -> None:
    """The same non-root bridge, given a directory of its own, delivers: the refusal
    above is about the planted directory, not about running without root."""
    mine = open_base / "mine"
    mine.mkdir(mode=0o700)
    os.chown(mine, BRIDGE_UID, BRIDGE_UID)
    config = _non_root_config(stack, open_base, mine / "creds")
    agent = Path(stack.workload_socket_uri.removeprefix("unix://"))
    for reachable in (agent.parent.parent, agent.parent):  # the dev agent, as for a workload
        reachable.chmod(0o755)
    agent.chmod(0o666)
    proc = subprocess.Popen(_as_uid(BRIDGE_UID, "run", "--config", str(config)),
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=_non_root_env())
    try:
        wait_for(lambda: (mine / "creds" / "aws" / "demo.json").exists() or (
            proc.poll() is not None), "a credential from the non-root bridge", timeout=60)
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        written = mine / "creds" / "aws" / "demo.json"
        assert written.stat().st_uid == BRIDGE_UID
        assert stat.S_IMODE(written.stat().st_mode) == 0o600
    finally:
        code, _, err = stop(proc)  # type: ignore[arg-type]
    assert code == 0, err[-2000:]
    assert "Traceback" not in err
