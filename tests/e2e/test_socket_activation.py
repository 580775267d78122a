"""Listener takeover across a restart (issue 13, item 3), against the real daemon process.

Under systemd socket activation (`LISTEN_FDS`, deploy/systemd/spiffe-bridge.socket) the
listening socket belongs to systemd, played here by the test: the daemon adopts it, and
while the daemon restarts the port never closes, so no other process can bind it, and a
request sent in the gap is answered by the next daemon. Without activation, a port that
is taken is one clear line and exit 1, never a traceback.
"""

from __future__ import annotations

import http.client
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import WriteConfig
from tests.support.process import clean_env, free_port, stop
from tests.support.wait import wait_for

pytestmark = pytest.mark.integration


# What systemd does between fork and exec: the socket to fd 3, LISTEN_PID = the pid.
_EXEC_AS_SYSTEMD = """
import os, sys
fd = int(sys.argv[1])
if fd != 3:
    os.dup2(fd, 3)
    os.close(fd)
os.environ.update(LISTEN_PID=str(os.getpid()), LISTEN_FDS="1", LISTEN_FDNAMES="http")
os.execv(sys.executable, [sys.executable, "-m", "bridge", *sys.argv[2:]])
"""


def _activated(config: Path, listener: socket.socket) -> subprocess.Popen[str]:
    """The daemon as systemd starts it, with the test holding the socket as systemd does."""
    fd = listener.fileno()
    return subprocess.Popen(
        [sys.executable, "-c", _EXEC_AS_SYSTEMD, str(fd), "run", "--config", str(config)],
        pass_fds=(fd,), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
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
