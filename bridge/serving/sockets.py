"""The daemon's unix-socket paths: a stale socket from an earlier run is replaced, but
never a file that is not a socket, nor a socket another process still answers on (that
would steal a live daemon's clients)."""

from __future__ import annotations

import socket
import stat
from pathlib import Path

from bridge.errors import ServingError


def remove_stale(path: Path, *, key: str, reason: str, live_check: bool = True) -> None:
    """Remove the socket at `path` a previous run left. Refuse anything else (`key` is the
    config key that named the path, for the message)."""
    try:
        st = path.lstat()
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise ServingError(f"{path} exists and is not a socket: refusing to replace it "
                           f"({key})", reason=reason)
    if live_check and answers(path):
        raise ServingError(f"another process answers on unix://{path}: refusing to take "
                           f"it over (is another bridge running with this {key}?)",
                           reason=reason)
    path.unlink(missing_ok=True)


def answers(path: Path, timeout: float = 0.5) -> bool:
    """Whether something accepts connections on the unix socket `path`."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(timeout)
        try:
            probe.connect(str(path))
        except OSError:
            return False
    return True
