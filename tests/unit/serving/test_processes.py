"""Caller processes: pinned by pidfd and start time; refused once gone."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge.serving.processes import (
    CallerProcess,
    socket_holders,
    start_time,
    tcp_caller,
    unix_caller,
)


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


def _fake_process(proc: Path, pid: int, start: int, fds: dict[str, str]) -> None:
    (proc / str(pid) / "fd").mkdir(parents=True, exist_ok=True)
    fields = " ".join(str(start if n == 22 else n) for n in range(3, 30))
    (proc / str(pid) / "stat").write_text(f"{pid} (w) {fields}\n")
    for fd, target in fds.items():
        link = proc / str(pid) / "fd" / fd
        link.unlink(missing_ok=True)
        link.symlink_to(target)


def test_a_reused_pid_is_not_the_caller(tmp_path: Path) -> None:
    """Same pid, another start time: another process, so not the one that asked."""
    _fake_process(tmp_path, 4242, 1000, {"3": "socket:[77]"})
    caller = CallerProcess(pid=4242, uid=1, start="1000", inode=77, proc=tmp_path)
    assert caller.still_there()
    _fake_process(tmp_path, 4242, 2000, {"3": "socket:[77]"})
    assert not caller.still_there()


def test_a_socket_held_twice_names_nobody(tmp_path: Path) -> None:
    _fake_process(tmp_path, 10, 5, {"3": "socket:[77]"})
    _fake_process(tmp_path, 11, 5, {"4": "socket:[77]", "5": "socket:[78]"})
    assert socket_holders(77, tmp_path) == {10, 11}
    assert socket_holders(78, tmp_path) == {11}
    caller = CallerProcess(pid=10, uid=1, start="5", inode=77, proc=tmp_path)
    assert not caller.still_there()


def test_an_unreadable_fd_table_names_nobody(tmp_path: Path) -> None:
    """Without the privilege to read every fd table a holder could hide: fail closed."""
    _fake_process(tmp_path, 10, 5, {"3": "socket:[77]"})
    (tmp_path / "12").mkdir()
    (tmp_path / "12" / "fd").write_text("")  # listdir fails: as EACCES would
    assert socket_holders(77, tmp_path) is None
