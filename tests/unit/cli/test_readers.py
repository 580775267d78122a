"""`status` and `credential-process` when there is no daemon, or no such target: one
line on stderr that says so, naming the socket or the target; never a gRPC trace."""

from __future__ import annotations

import socket as sockets
from pathlib import Path

import pytest

from bridge.cli import main
from tests.support.configs import render


@pytest.fixture(autouse=True)
def _no_env_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SPIFFE_ENDPOINT_SOCKET", raising=False)


@pytest.fixture
def config(short_dir: Path) -> Path:
    """A valid config (targets etl-s3, audit) whose daemon socket is not there."""
    path = short_dir / "bridge.yaml"
    path.write_text(render(((("grpc", "socket"), f"unix://{short_dir}/bridge.sock"),
                            (("outputs", "directory"), str(short_dir / "out")))))
    return path


def _one_line(capsys: pytest.CaptureFixture[str]) -> str:
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1, err
    return lines[0]


@pytest.mark.parametrize("command", [["status"], ["credential-process", "--target", "etl-s3"]],
                         ids=["status", "credential-process"])
def test_no_socket_file_says_the_daemon_is_not_running(
        command: list[str], short_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--socket naming a socket that does not exist: exit 1, one line with the socket."""
    uri = f"unix://{short_dir}/none.sock"
    assert main([*command, "--socket", uri]) == 1
    assert _one_line(capsys) == f"spiffe-bridge: daemon not running at {uri}"


def test_a_stale_socket_file_is_the_same_line(short_dir: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    """A socket file with nothing listening (a daemon that was killed): the same line."""
    path = short_dir / "stale.sock"
    s = sockets.socket(sockets.AF_UNIX)
    s.bind(str(path))
    s.close()
    assert main(["status", "--socket", f"unix://{path}"]) == 1
    assert _one_line(capsys) == f"spiffe-bridge: daemon not running at unix://{path}"


def test_status_through_the_config(config: Path, short_dir: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", "--config", str(config)]) == 1
    assert _one_line(capsys) == (
        f"spiffe-bridge: daemon not running at unix://{short_dir}/bridge.sock")


def test_credential_process_through_the_config_without_daemon_or_files(
        config: Path, short_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """No daemon and no files from `once`: both said in one line."""
    assert main(["credential-process", "--target", "etl-s3", "--config", str(config)]) == 1
    assert _one_line(capsys) == (
        f"spiffe-bridge: daemon not running at unix://{short_dir}/bridge.sock, and "
        f"{short_dir / 'out'} holds no credentials for 'etl-s3' (from `once`)")


def test_a_target_the_config_does_not_name_is_unknown(config: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["credential-process", "--target", "nope", "--config", str(config)]) == 1
    assert _one_line(capsys) == (
        "spiffe-bridge: unknown target 'nope' (the config's targets: etl-s3, audit)")
