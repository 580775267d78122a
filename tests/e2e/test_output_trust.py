"""The output directory cannot be handed to the bridge by someone else (issue 13, item
11): a directory another uid owns or can write, a parent others can write, a FIFO
planted at an output path, and a symlinked parent re-pointed at a disk while running."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from bridge.devstack import DevStack, HttpFailure
from tests.conftest import WriteConfig
from tests.support.process import bridge_cli, start_bridge, stop
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
