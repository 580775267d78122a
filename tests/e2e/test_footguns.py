"""Configs `check` used to accept and `run` carried out (issue 13, item 12): a token file
over an unrelated file, a gRPC socket path another process listens on, and a shared
1777 output directory. `check` refuses each naming the key; `run` refuses before doing it."""

from __future__ import annotations

import shutil
import socket
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.conftest import WriteConfig
from tests.support.process import bridge_cli, free_port, start_bridge, stop
from tests.support.wait import wait_for

pytestmark = pytest.mark.integration


def _both_refuse(config: Path, key: str, *, run_says: str = "") -> None:
    """`check` exits 2 naming the key; `run` exits 2 the same way, or (`run_says`: a
    directory problem found when it prepares the directory) 1 with that text."""
    for command in ("check", "run"):
        proc = bridge_cli(command, "--config", str(config), timeout=40)
        assert "Traceback" not in proc.stderr
        if command == "run" and run_says:
            assert proc.returncode == 1, (command, proc.stdout, proc.stderr)
            assert run_says in proc.stderr, proc.stderr
            continue
        assert proc.returncode == 2, (command, proc.stdout, proc.stderr)
        assert f"{key}: " in proc.stderr, proc.stderr


def test_a_token_file_over_an_unrelated_file_is_refused(
        write_config: WriteConfig, short_dir: Path) -> None:
    """metadata.container.token_file names someone's existing file: refused, untouched."""
    precious = short_dir / "app.conf"
    precious.write_text("database_password = hunter2\n")
    config = write_config(serve=["container"])
    doc = yaml.safe_load(config.read_text())
    doc["metadata"] = {"container": {"address": f"127.0.0.1:{free_port()}",
                                     "token_file": str(precious)}}
    config.write_text(yaml.safe_dump(doc))
    _both_refuse(config, "metadata.container.token_file")
    assert precious.read_text() == "database_password = hunter2\n"


def test_a_token_file_the_bridge_wrote_is_accepted_again(
        write_config: WriteConfig, short_dir: Path, outdir: Path) -> None:
    """The control: after a run, the same config checks OK (its own token file)."""
    token_file = short_dir / "tokens" / "container.token"
    config = write_config(serve=["container"])
    doc = yaml.safe_load(config.read_text())
    doc["metadata"] = {"container": {"address": f"127.0.0.1:{free_port()}",
                                     "token_file": str(token_file)}}
    config.write_text(yaml.safe_dump(doc))
    proc = start_bridge("run", "--config", str(config))
    try:
        wait_for(token_file.exists, "the token file")
        running = bridge_cli("check", "--config", str(config), timeout=30)
        assert running.returncode == 0, running.stderr  # its own socket and token file
    finally:
        code, _, err = stop(proc)
    assert code == 0, err
    again = bridge_cli("check", "--config", str(config), timeout=30)
    assert again.returncode == 0, again.stderr


@pytest.fixture
def other_daemon(short_dir: Path) -> Iterator[Path]:
    """Another process's live unix socket (a listener in this test process)."""
    path = short_dir / "other.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.bind(str(path))
        s.listen(8)
        yield path


def test_a_grpc_socket_another_process_listens_on_is_refused(
        write_config: WriteConfig, other_daemon: Path) -> None:
    """`run` would unlink it and serve there: refused; the other socket stays in place."""
    inode = other_daemon.stat().st_ino
    config = write_config()
    doc = yaml.safe_load(config.read_text())
    doc["grpc"]["socket"] = f"unix://{other_daemon}"
    config.write_text(yaml.safe_dump(doc))
    _both_refuse(config, "grpc.socket")
    assert other_daemon.stat().st_ino == inode


def test_a_leftover_socket_nobody_listens_on_is_fine(write_config: WriteConfig,
                                                    short_dir: Path) -> None:
    """A socket file from a killed process (nothing answers) is replaced as before."""
    path = short_dir / "bridge.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.bind(str(path))
    assert stat.S_ISSOCK(path.stat().st_mode)
    proc = bridge_cli("check", "--config", str(write_config()), timeout=30)
    assert proc.returncode == 0, proc.stderr


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A private stand-in for /tmp or /dev/shm itself: root's, mode 1777."""
    path = Path(tempfile.mkdtemp(prefix="sb-shared-", dir="/dev/shm"))
    path.chmod(0o1777)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_a_shared_sticky_output_directory_is_refused_not_chmodded(
        write_config: WriteConfig, shared_dir: Path) -> None:
    """outputs.directory is a 1777 directory: refused by `check` and `run`, still 1777."""
    config = write_config()
    doc = yaml.safe_load(config.read_text())
    doc["outputs"]["directory"] = str(shared_dir)
    config.write_text(yaml.safe_dump(doc))
    _both_refuse(config, "outputs.directory", run_says="group or others can write")
    assert stat.S_IMODE(shared_dir.stat().st_mode) == 0o1777
