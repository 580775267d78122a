"""Who is on the other end of a loopback TCP connection: the uid that owns the peer's
socket, from the kernel's socket table (`/proc/net/tcp`, `/proc/net/tcp6`).

No privilege is needed: the table lists every socket of this network namespace with
its owner. The peer's socket is the row whose local address is our peer address and
whose remote address is our local address (our own accepted socket is the mirror row,
owned by us). The uid is as seen from this process's user namespace.
"""

from __future__ import annotations

import ipaddress
import socket
import sys
from pathlib import Path

_TABLES = {socket.AF_INET: Path("/proc/net/tcp"), socket.AF_INET6: Path("/proc/net/tcp6")}
_ESTABLISHED = "01"


def peer_uid(sock: socket.socket, *, tables: dict[int, Path] | None = None) -> int | None:
    """The uid owning the other end of `sock` (a loopback connection), None if the
    table has no such row (the peer closed, or not this namespace)."""
    found = peer_socket(sock, tables=tables)
    return found[0] if found is not None else None


def peer_socket(sock: socket.socket, *, tables: dict[int, Path] | None = None
                ) -> tuple[int, int] | None:
    """(uid, socket inode) of the other end of `sock`, as `peer_uid` finds it; the
    inode names the peer's socket in `/proc/<pid>/fd` (`serving.processes`)."""
    try:
        local = sock.getsockname()
        remote = sock.getpeername()
    except OSError:
        return None
    table = (tables or _TABLES).get(sock.family)
    if table is None:
        return None
    want = f"{_hex(remote[0], remote[1])} {_hex(local[0], local[1])} "
    try:
        text = table.read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    at = text.find(want)
    if at < 0:
        return None
    end = text.find("\n", at)
    fields = text[at:end if end >= 0 else None].split()
    # local rem st tx:rx tr:when retrnsmt uid timeout inode ...
    if len(fields) < 7 or fields[2] != _ESTABLISHED or not fields[6].isdigit():
        return None
    inode = int(fields[8]) if len(fields) > 8 and fields[8].isdigit() else 0
    return int(fields[6]), inode


def _hex(host: str, port: int) -> str:
    """An address as the table prints it: the raw network-order words in host byte
    order, `%08X` each, then `:%04X` of the port."""
    packed = ipaddress.ip_address(host.split("%", 1)[0]).packed
    words = [packed[i:i + 4] for i in range(0, len(packed), 4)]
    if sys.byteorder == "little":
        words = [w[::-1] for w in words]
    return "".join(w.hex().upper() for w in words) + f":{port:04X}"
