"""Listener takeover across a restart (issue 13, item 3), against the real daemon process.

Under systemd socket activation (`LISTEN_FDS`, deploy/systemd/spiffe-bridge.socket) the
listening socket belongs to systemd, played here by the test: the daemon adopts it, and
while the daemon restarts the port never closes, so no other process can bind it, and a
request sent in the gap is answered by the next daemon. Without activation, a port that
is taken is one clear line and exit 1, never a traceback.
"""

from __future__ import annotations

import http.client
import os
import socket
import stat
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from bridge.client import BridgeClient
from bridge.devstack import DevStack
from bridge.errors import ApiError
from tests.conftest import WriteConfig
from tests.support.configs import CALLER
from tests.support.process import clean_env, free_port, stop
from tests.support.wait import wait_for

pytestmark = pytest.mark.integration


# What systemd does between fork and exec: the sockets to fds 3, 4, ...; LISTEN_PID = the
# pid. (Moved out of the way first, so that no descriptor lands on one not yet moved.)
_EXEC_AS_SYSTEMD = """
import os, sys
import fcntl
fds = [int(fd) for fd in sys.argv[1].split(",")]
high = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 100) for fd in fds]
for fd in fds:
    os.close(fd)
for n, fd in enumerate(high):
    os.dup2(fd, 3 + n)  # inheritable
    os.close(fd)
os.environ.update(LISTEN_PID=str(os.getpid()), LISTEN_FDS=str(len(fds)))
os.execv(sys.executable, [sys.executable, "-m", "bridge", *sys.argv[2:]])
"""


def _activated(config: Path, *listeners: socket.socket) -> subprocess.Popen[str]:
    """The daemon as systemd starts it, with the test holding the sockets as systemd does."""
    fds = tuple(listener.fileno() for listener in listeners)
    return subprocess.Popen(
        [sys.executable, "-c", _EXEC_AS_SYSTEMD, ",".join(map(str, fds)), "run", "--config",
         str(config)],
        pass_fds=fds, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, env=clean_env())


def _healthz(port: int) -> int:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request("GET", "/healthz")
        return connection.getresponse().status
    finally:
        connection.close()


def test_an_activated_daemon_adopts_the_socket_and_a_restart_leaves_no_gap(
        write_config: WriteConfig, outdir: Path) -> None:
    port = free_port()
    config = write_config()
    doc = yaml.safe_load(config.read_text())
    doc["http"] = {"address": f"127.0.0.1:{port}"}
    config.write_text(yaml.safe_dump(doc))
    with socket.create_server(("127.0.0.1", port), backlog=64) as listener:
        first = _activated(config, listener)
        try:
            wait_for(lambda: _healthz(port) == 200, "/healthz on the passed socket",
                     tolerate=(OSError,))
        finally:
            code, _, err = stop(first)
        assert code == 0, err
        assert "Traceback" not in err
        # The gap between two daemons: the port is still held, nobody else can take it...
        with socket.socket() as impostor, pytest.raises(OSError):
            impostor.bind(("127.0.0.1", port))
        # ...and a request sent now waits in the backlog for the next daemon.
        waiting = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        waiting.request("GET", "/healthz")
        second = _activated(config, listener)
        try:
            assert waiting.getresponse().status == 200
        finally:
            waiting.close()
            code, _, err = stop(second)
        assert code == 0, err
        assert "Traceback" not in err


def test_a_taken_port_is_one_line_and_exit_1(write_config: WriteConfig) -> None:
    port = free_port()
    config = write_config()
    doc = yaml.safe_load(config.read_text())
    doc["http"] = {"address": f"127.0.0.1:{port}"}
    config.write_text(yaml.safe_dump(doc))
    with socket.create_server(("127.0.0.1", port)):
        proc = subprocess.run([sys.executable, "-m", "bridge", "run", "--config", str(config)],
                              capture_output=True, text=True, timeout=60, env=clean_env(),
                              check=False)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if f"127.0.0.1:{port}" in line]
    assert errors, proc.stderr
    assert "in use" in errors[-1].lower(), errors[-1]


def _credential(address: str, token: str, timeout: float = 5.0) -> bool:
    client = BridgeClient(address, svid=lambda: token, timeout=timeout)
    try:
        return client.get_credential("demo").material is not None
    finally:
        client.close()


def _answer(address: str, token: str) -> str:
    try:
        return "credential" if _credential(address, token, timeout=60.0) else "none"
    except ApiError as exc:
        return str(exc)


def test_an_activated_daemon_serves_grpc_on_the_passed_sockets_and_a_restart_leaves_no_gap(
        write_config: WriteConfig, stack: DevStack) -> None:
    """grpc.socket and grpc.tcp_address passed by systemd (grpcio cannot adopt a
    descriptor: the daemon relays them to a private socket): both answer; across a
    restart the unix path stays systemd's socket and the port stays held, so nobody can
    bind either; a call made in the gap is answered by the next daemon."""
    port = free_port()
    config = write_config(allowed_callers=[CALLER])  # TCP: every target restricted
    token = stack.authority.mint(CALLER, ["spiffe-bridge"], 300)
    doc = yaml.safe_load(config.read_text())
    doc["grpc"]["tcp_address"] = f"127.0.0.1:{port}"
    config.write_text(yaml.safe_dump(doc))
    path = Path(urlsplit(doc["grpc"]["socket"]).path)
    addresses = (f"unix://{path}", f"127.0.0.1:{port}")
    unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        unix.bind(str(path))
        os.chmod(path, 0o600)
        unix.listen(64)
        with socket.create_server(("127.0.0.1", port), backlog=64) as tcp:
            first = _activated(config, unix, tcp)
            try:
                for address in addresses:
                    wait_for(lambda a=address: _credential(a, token),
                             f"a credential over {address}", tolerate=(ApiError,))
                private = [p for p in path.parent.iterdir() if p.name.startswith(".grpc-")]
                assert len(private) == 1
                assert stat.S_IMODE(private[0].stat().st_mode) == 0o700
            finally:
                code, _, err = stop(first)
            assert code == 0, err
            assert "Traceback" not in err
            # The gap: systemd's socket is still at the path (the daemon did not unlink
            # it), its private directory is gone, and neither address can be bound.
            assert stat.S_ISSOCK(path.lstat().st_mode)
            assert not [p for p in path.parent.iterdir() if p.name.startswith(".grpc-")]
            with socket.socket() as impostor, pytest.raises(OSError):
                impostor.bind(("127.0.0.1", port))
            with socket.socket(socket.AF_UNIX) as impostor, pytest.raises(OSError):
                impostor.bind(str(path))
            # Calls made now wait in the backlog and are answered by the next daemon (while
            # it starts, that may be its own "not yet"; never a refused connection).
            with ThreadPoolExecutor(2) as pool:
                waiting = [pool.submit(_answer, a, token) for a in addresses]
                time.sleep(0.5)
                assert not any(w.done() for w in waiting)
                second = _activated(config, unix, tcp)
                try:
                    for answer in (w.result(timeout=60) for w in waiting):
                        assert answer == "credential" or (
                            "UNAVAILABLE" in answer and "connect" not in answer.lower()), answer
                    for address in addresses:
                        wait_for(lambda a=address: _credential(a, token),
                                 f"a credential over {address}", tolerate=(ApiError,))
                finally:
                    code, _, err = stop(second)
            assert code == 0, err
            assert "Traceback" not in err
    finally:
        unix.close()
        path.unlink(missing_ok=True)
