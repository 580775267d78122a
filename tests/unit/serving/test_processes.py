"""Caller processes: pinned by pidfd and start time; refused once gone."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge.serving.processes import start_time, tcp_caller, unix_caller


@pytest.fixture
def unix_listener(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    path = str(tmp_path / "s.sock")
    server = socket.socket(socket.AF_UNIX)
    server.bind(path)
    server.listen(4)
    yield server, path
    server.close()


def test_unix_peer_is_this_process() -> None:
    """SO_PEERCRED names the connecting process; it is still there."""
    a, b = socket.socketpair()
    with a, b:
        caller = unix_caller(a)
        assert caller is not None
        assert (caller.pid, caller.uid) == (os.getpid(), os.getuid())
        assert caller.still_there()
        caller.close()


def test_unix_peer_that_exited_is_not_there(unix_listener: tuple[socket.socket, str]) -> None:
    """A caller that connects and exits before the answer is refused (pidfd, start)."""
    server, path = unix_listener
    child = subprocess.Popen([sys.executable, "-c", (
        "import socket,sys; s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); "
        "sys.stdin.read()"), path], stdin=subprocess.PIPE)
    conn, _ = server.accept()
    with conn:
        caller = unix_caller(conn)
        assert caller is not None
        assert caller.pid == child.pid
        assert caller.still_there()
        child.communicate(b"", timeout=10)
        assert not caller.still_there()
        caller.close()


def test_tcp_peer_found_by_socket_inode() -> None:
    """A loopback peer's pid is the process holding its socket (here: this one)."""
    server = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(server.getsockname())
    conn, _ = server.accept()
    with server, client, conn:
        caller = tcp_caller(conn)
        assert caller is not None
        assert (caller.pid, caller.uid) == (os.getpid(), os.getuid())
        assert caller.still_there()
        client.close()  # the pid no longer holds the socket: not the caller any more
        assert not caller.still_there()
        caller.close()


def test_tcp_peer_in_another_process_that_exits() -> None:
    """The holder is the child; once it has exited the connection names nobody."""
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    child = subprocess.Popen([sys.executable, "-c", (
        "import socket,sys; s=socket.create_connection(('127.0.0.1', int(sys.argv[1]))); "
        "sys.stdin.read()"), str(port)], stdin=subprocess.PIPE)
    conn, _ = server.accept()
    with server, conn:
        caller = tcp_caller(conn)
        assert caller is not None
        assert caller.pid == child.pid
        child.communicate(b"", timeout=10)
        assert not caller.still_there()
        assert tcp_caller(conn) is None
        caller.close()


def test_start_time_survives_a_hostile_comm(tmp_path: Path) -> None:
    """comm may contain spaces and parentheses: field 22 is counted after the last ')'."""
    (tmp_path / "42").mkdir()
    fields = " ".join(str(n) for n in range(3, 30))
    (tmp_path / "42" / "stat").write_text(f"42 (a) b (c) {fields}\n")
    assert start_time(42, tmp_path) == "22"
    assert start_time(43, tmp_path) is None
