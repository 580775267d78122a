"""Which process is on the other end of a local connection, pinned so that PID reuse
or the caller exiting mid-call cannot hand its identity to another process.

- **Unix-socket peers**: `SO_PEERCRED` (pid, uid) and `SO_PEERPIDFD` (Linux >= 6.5), a
  pidfd for the very process that connected. No privilege is needed; the pid is in the
  bridge's PID namespace (0 when the caller's process is not visible there: in
  Kubernetes the DaemonSet needs `hostPID`, as the SPIRE agent does).
- **Loopback TCP peers** (the metadata endpoints): the uid and socket inode from the
  kernel's socket table (`peers.peer_socket`), the pid by finding that inode among the
  `/proc/<pid>/fd` links of every process (whatever its uid: a socket handed to another
  user's process must show up as shared). Reading other users' fd tables
  needs root or CAP_SYS_PTRACE; where any fd table cannot be read, nobody is named (a
  holder could hide there) and the caller is refused.
  A socket held by more than one process (a shared fd) is refused: which one asks?

Either way the caller is pinned by a pidfd (`os.pidfd_open` for TCP) and its start time
(`/proc/<pid>/stat` field 22). `still_there()` is asked again after the broker has
attested the pid: the process must not have exited (pidfd), its start time must be the
same (no reuse) and, for TCP, it must still hold the socket. A pid cannot be reused
while its process lives, so "alive before and after the attestation" means the agent
attested exactly the process that asked.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import struct
from dataclasses import dataclass, field
from pathlib import Path

from bridge.serving.metadata.peers import peer_socket

_UCRED = struct.Struct("3i")
SO_PEERPIDFD = getattr(socket, "SO_PEERPIDFD", 77)  # Linux 6.5; Python 3.11 lacks the name
PROC = Path("/proc")


@dataclass(slots=True)
class CallerProcess:
    """One caller, pinned (see the module docstring). Close it when the call ends."""

    pid: int
    uid: int
    start: str | None
    inode: int | None = None  # TCP: the socket the process must still hold
    pidfd: int | None = field(default=None, repr=False)
    proc: Path = field(default=PROC, repr=False)

    def still_there(self) -> bool:
        """Alive, the same process (start time, pidfd), and for TCP holding the socket."""
        if self.pid <= 0:
            return False
        if self.pidfd is not None and _exited(self.pidfd):
            return False
        if start_time(self.pid, self.proc) != self.start or self.start is None:
            return False
        # TCP: still the socket's only holder (it may have been handed over meanwhile)
        return self.inode is None or socket_holders(self.inode, self.proc) == {self.pid}

    def close(self) -> None:
        fd, self.pidfd = self.pidfd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)


def unix_caller(sock: socket.socket, proc: Path = PROC) -> CallerProcess | None:
    """The process that connected `sock` (an accepted AF_UNIX socket), or None."""
    try:
        pid, uid, _ = _UCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                    _UCRED.size))
    except OSError:
        return None
    pidfd: int | None
    try:
        pidfd = int(sock.getsockopt(socket.SOL_SOCKET, SO_PEERPIDFD))
    except OSError:  # an older kernel: the start time alone pins the process
        pidfd = None
    if pidfd is not None:
        os.set_inheritable(pidfd, False)
    caller = CallerProcess(pid=pid, uid=uid, start=start_time(pid, proc) if pid > 0 else None,
                           pidfd=pidfd, proc=proc)
    if pidfd is not None and _pidfd_pid(pidfd) != pid:
        caller.start = None  # the connector has exited: nothing to attest
    return caller


def tcp_caller(sock: socket.socket, proc: Path = PROC) -> CallerProcess | None:
    """The process holding the other end of `sock` (a loopback TCP connection), or
    None when it cannot be told (no table row, fd tables not readable, shared)."""
    found = peer_socket(sock)
    if found is None:
        return None
    uid, inode = found
    holders = socket_holders(inode, proc)
    if holders is None or len(holders) != 1:
        return None
    (pid,) = holders
    start = start_time(pid, proc)
    try:
        pidfd: int | None = os.pidfd_open(pid)
    except OSError:
        pidfd = None
    caller = CallerProcess(pid=pid, uid=uid, start=start, inode=inode, pidfd=pidfd, proc=proc)
    if not caller.still_there():  # exited, or the pid changed hands, as we looked
        caller.close()
        return None
    return caller


def socket_holders(inode: int, proc: Path = PROC) -> set[int] | None:
    """The pids with an fd on socket `inode`: every process is looked at, whatever its
    uid (a socket handed to another user's process must show up as shared). None when
    some process's fd table cannot be read (no root or CAP_SYS_PTRACE): it might hold
    the socket too, so nobody can be named (fail closed)."""
    link = f"socket:[{inode}]"
    found: set[int] = set()
    try:
        pids = [e for e in os.listdir(proc) if e.isdigit()]
    except OSError:
        return None
    for pid in pids:
        base = proc / pid
        try:
            fds = os.listdir(base / "fd")
        except FileNotFoundError:  # exited meanwhile
            continue
        except OSError:  # not ours to read: it could be a holder we cannot see
            if os.path.exists(base):
                return None
            continue
        for fd in fds:
            try:
                if os.readlink(base / "fd" / fd) == link:
                    found.add(int(pid))
                    break
            except OSError:
                continue
    return found


def start_time(pid: int, proc: Path = PROC) -> str | None:
    """Field 22 of /proc/<pid>/stat (clock ticks since boot), None if gone."""
    try:
        text = (proc / str(pid) / "stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    # comm (field 2) is in parentheses and may contain anything: split after the last ')'
    rest = text[text.rfind(")") + 2:].split()
    return rest[19] if len(rest) > 19 else None  # fields 3.. -> index 19 is field 22


def _exited(pidfd: int) -> bool:
    """A pidfd polls readable once its process has exited."""
    poller = select.poll()  # not select(): fds past 1024 are normal in a busy daemon
    poller.register(pidfd, select.POLLIN)
    try:
        return bool(poller.poll(0))
    except OSError:
        return True


def _pidfd_pid(pidfd: int) -> int | None:
    """The pid a pidfd names (-1 once it has exited), from /proc/self/fdinfo."""
    try:
        text = Path(f"/proc/self/fdinfo/{pidfd}").read_text(encoding="ascii")
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("Pid:"):
            with contextlib.suppress(ValueError):
                return int(line.split()[1])
    return None
