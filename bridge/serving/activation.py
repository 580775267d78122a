"""systemd socket activation (`LISTEN_FDS`): listening sockets handed over by systemd.

With a `.socket` unit, systemd holds the listening sockets across restarts of the
daemon, so a restart leaves no moment in which the port is closed and another local
process could take it (and receive the next SDK's `Authorization` token). The HTTP
listeners (metadata endpoints, `/metrics`) adopt a passed socket whose bound address is
the one configured, and bind themselves otherwise. grpcio cannot serve on an inherited
listening descriptor, so the gRPC socket is always bound by the daemon (it is kept
open across reloads, and its path sits in a directory only the service user writes).

The protocol (sd_listen_fds(3)): descriptors 3 .. 3+LISTEN_FDS-1, valid only when
LISTEN_PID is this process; the variables are removed once read so children do not
inherit them.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading

FIRST_FD = 3  # SD_LISTEN_FDS_START

_lock = threading.Lock()
_passed: dict[tuple[str, int], socket.socket] | None = None


def take(host: str, port: int) -> socket.socket | None:
    """The passed listening TCP socket bound to (`host`, `port`), once; None if there is
    none (no socket activation, or no socket for that address)."""
    with _lock:
        passed = _inherited()
        return passed.pop((_normal(host), port), None)


def _inherited() -> dict[tuple[str, int], socket.socket]:
    global _passed  # noqa: PLW0603 - what the process was started with, read once
    if _passed is None:
        _passed = {}
        count, pid = os.environ.pop("LISTEN_FDS", ""), os.environ.pop("LISTEN_PID", "")
        os.environ.pop("LISTEN_FDNAMES", None)
        if pid.isdigit() and int(pid) == os.getpid() and count.isdigit():
            for fd in range(FIRST_FD, FIRST_FD + min(int(count), 64)):
                sock = _listening_tcp(fd)
                if sock is not None:
                    host, port = sock.getsockname()[:2]
                    _passed[(_normal(str(host)), int(port))] = sock
    return _passed


def _listening_tcp(fd: int) -> socket.socket | None:
    try:
        sock = socket.socket(fileno=fd)
    except OSError:
        return None
    try:
        ok = (sock.family in (socket.AF_INET, socket.AF_INET6)
              and sock.type == socket.SOCK_STREAM
              and sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 1)
    except OSError:
        ok = False
    if not ok:
        sock.detach()  # not ours to close
        return None
    os.set_inheritable(fd, False)
    with contextlib.suppress(OSError):
        sock.setblocking(False)
    return sock


def _normal(host: str) -> str:
    return host.strip("[]").lower()
