"""systemd socket activation (`LISTEN_FDS`): listening sockets handed over by systemd.

With a `.socket` unit, systemd holds the listening sockets across restarts of the
daemon, so a restart leaves no moment in which the port is closed and another local
process could take it (and receive the next SDK's `Authorization` token). The HTTP
listeners (metadata endpoints, `/metrics`, the reader socket) adopt a passed socket
whose bound address (or unix path) is the one configured, and bind themselves otherwise.
grpcio cannot serve on an inherited listening descriptor, so a passed gRPC socket is
served through an in-process byte relay in front of a private one (grpc/server.py).

A service gets a duplicate of the passed socket and closes it when it stops; the
original stays open for the process's life, so a service re-created by a reload adopts
the same socket again instead of binding (and failing on) an address systemd holds.

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
_passed: dict[tuple[str, int] | str, socket.socket] | None = None


def take(host: str, port: int) -> socket.socket | None:
    """A duplicate of the passed listening TCP socket bound to (`host`, `port`); None if
    there is none (no socket activation, or no socket for that address)."""
    return _dup((_normal(host), port))


def take_unix(path: str | os.PathLike[str]) -> socket.socket | None:
    """A duplicate of the passed listening unix socket bound to `path`, or None."""
    return _dup(_unix_key(os.fspath(path)))


def holds_unix(path: str | os.PathLike[str]) -> bool:
    """Whether systemd passed this process the socket at `path` (so its being live is
    not another daemon's)."""
    with _lock:
        return _unix_key(os.fspath(path)) in _inherited()


def _dup(key: tuple[str, int] | str) -> socket.socket | None:
    with _lock:
        sock = _inherited().get(key)
        if sock is None:
            return None
        copy = sock.dup()
    copy.setblocking(False)
    return copy


def _inherited() -> dict[tuple[str, int] | str, socket.socket]:
    global _passed  # noqa: PLW0603 - what the process was started with, read once
    if _passed is None:
        _passed = {}
        count, pid = os.environ.pop("LISTEN_FDS", ""), os.environ.pop("LISTEN_PID", "")
        os.environ.pop("LISTEN_FDNAMES", None)
        if pid.isdigit() and int(pid) == os.getpid() and count.isdigit():
            for fd in range(FIRST_FD, FIRST_FD + min(int(count), 64)):
                sock = _listening(fd)
                if sock is None:
                    continue
                if sock.family == socket.AF_UNIX:
                    _passed[_unix_key(str(sock.getsockname()))] = sock
                else:
                    host, port = sock.getsockname()[:2]
                    _passed[(_normal(str(host)), int(port))] = sock
    return _passed


def _listening(fd: int) -> socket.socket | None:
    """The listening stream socket at `fd` (TCP, or unix with a path), else None."""
    try:
        sock = socket.socket(fileno=fd)
    except OSError:
        return None
    try:
        named = sock.family != socket.AF_UNIX or str(sock.getsockname()).startswith("/")
        ok = (sock.family in (socket.AF_INET, socket.AF_INET6, socket.AF_UNIX) and named
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


def _unix_key(path: str) -> str:
    return os.path.realpath(path)


def _normal(host: str) -> str:
    """An address's host as a bound socket names it (`localhost`, which the config
    accepts, is bound as 127.0.0.1)."""
    host = host.strip("[]").lower()
    return "127.0.0.1" if host == "localhost" else host
