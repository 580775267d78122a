"""Private, atomic, symlink-proof files in a directory the bridge owns.

Every file is written to a fresh temp file opened O_EXCL|O_NOFOLLOW *relative to an
open directory fd*, fsynced, then renamed over the target, so a reader sees the old
file or the new one and never a torn one, and a symlink planted at the target or
swapped in for the directory cannot redirect a secret. Modes are set with fchmod, so the
umask cannot widen them, and re-applied on every write.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import select
import stat
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from bridge.errors import OutputError

FILE_MODE = 0o600
DIR_MODE = 0o700
TEMP_MARK = ".tmp."
_MEMORY_FS = {"tmpfs", "ramfs"}


def filesystem_type(path: Path, mountinfo: str = "/proc/self/mountinfo") -> str | None:
    """The fs type of the mount holding `path` (longest mount-point prefix wins)."""
    try:
        lines = Path(mountinfo).read_text().splitlines()
    except OSError:
        return None
    target = os.path.realpath(path)
    best, best_type = "", None
    for line in lines:
        left, _, right = line.partition(" - ")
        fields = left.split()
        if len(fields) < 5 or not right:
            continue
        mount_point = fields[4].replace("\\040", " ")
        inside = target == mount_point or target.startswith(mount_point.rstrip("/") + "/")
        if inside and len(mount_point) >= len(best):
            best, best_type = mount_point, right.split()[0]
    return best_type


def is_memory_backed(path: Path) -> bool:
    return filesystem_type(path) in _MEMORY_FS


def fd_filesystem_type(fd: int, mountinfo: str = "/proc/self/mountinfo") -> str | None:
    """The fs type of the mount an open fd lives on, found by its device number (the
    third mountinfo field), not by a path: a symlinked parent re-pointed since the
    directory was checked cannot make a write land on another filesystem unnoticed."""
    st = os.fstat(fd)
    device = f"{os.major(st.st_dev)}:{os.minor(st.st_dev)}"
    table = _MOUNTS if mountinfo == _MOUNTS.path else MountTable(mountinfo)
    return table.types().get(device)


class MountTable:
    """Device number -> fs type from a mountinfo file, parsed again only when the
    kernel says the mount table changed (mountinfo polls POLLPRI on every mount and
    unmount): every credential write checks its directory's filesystem, and reading
    and parsing the table each time was a tenth of a refresh's own CPU."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._file: IO[bytes] | None = None
        self._poll: select.poll | None = None
        self._types: dict[str, str] | None = None

    def types(self) -> dict[str, str]:
        with self._lock:
            if self._types is None or self._changed():
                self._types = self._read()
            return self._types

    def _changed(self) -> bool:
        if self._poll is None:
            return True
        return bool(self._poll.poll(0))

    def _read(self) -> dict[str, str]:
        try:
            if self._file is None:
                self._file = open(self.path, "rb")  # noqa: SIM115 - kept open to poll
                self._poll = select.poll()
                self._poll.register(self._file, select.POLLPRI | select.POLLERR)
            self._file.seek(0)
            text = self._file.read().decode(errors="replace")
        except OSError:
            self._close()
            return {}
        types: dict[str, str] = {}
        for line in text.splitlines():
            left, _, right = line.partition(" - ")
            fields = left.split()
            if len(fields) >= 5 and right:
                types.setdefault(fields[2], right.split()[0])
        return types

    def _close(self) -> None:
        if self._file is not None:
            self._file.close()
        self._file, self._poll = None, None


_MOUNTS = MountTable("/proc/self/mountinfo")


def is_fd_memory_backed(fd: int) -> bool:
    return fd_filesystem_type(fd) in _MEMORY_FS


def trust_problem(path: Path, *, uid: int | None = None, owners: bool = True) -> str | None:
    """Why directory `path` cannot hold credentials, or None.

    Refused: a directory owned by another uid (it could swap files in, or chmod it
    back); one that group or others may write (including a shared sticky directory such
    as /tmp itself: the bridge would have to chmod a system directory); and any
    ancestor owned by a uid other than root or ours, or writable by group or others
    unless it is sticky and root's (/tmp, /dev/shm as parents are fine: nobody else can
    rename our entry in them) or the root of a memory-backed volume (`_is_volume_root`).
    Both the path as written and its resolved form are checked, so a symlink in a
    directory someone else controls is refused too. A missing
    `path` (to be created 0700) has only its ancestors checked. `owners=False` skips the
    uid rules (`check` may run as another user than the daemon).
    """
    me = os.geteuid() if uid is None else uid
    try:
        st = os.stat(path)
    except FileNotFoundError:
        st = None
    except OSError as exc:
        return f"cannot inspect {path}: {exc.strerror}"
    if st is not None and (problem := _own_problem(path, st, me, owners=owners)):
        return problem
    resolved = Path(os.path.realpath(path))
    for ancestor in dict.fromkeys([*path.parents, *resolved.parents]):
        if os.path.lexists(ancestor) and (
                problem := _ancestor_problem(ancestor, path, me, owners=owners)):
            return problem
    return None


def _own_problem(path: Path, st: os.stat_result, me: int, *, owners: bool) -> str | None:
    if owners and st.st_uid != me:
        return f"{path} is owned by uid {st.st_uid}, not by this process (uid {me})"
    if st.st_mode & stat.S_ISVTX or st.st_mode & 0o022:
        return (f"{path} is a directory group or others can write (mode "
                f"{stat.S_IMODE(st.st_mode):04o}); give the bridge a directory of its own "
                "(it is not chmodded for you)")
    return None


def _ancestor_problem(ancestor: Path, path: Path, me: int, *, owners: bool) -> str | None:
    try:
        a = os.stat(ancestor)
    except OSError as exc:
        return f"cannot inspect {ancestor}: {exc.strerror}"
    if owners and a.st_uid not in (0, me):
        return (f"{ancestor} (a parent of {path}) is owned by uid {a.st_uid}: it could "
                "swap the directory")
    sticky_root = a.st_mode & stat.S_ISVTX and a.st_uid == 0
    if a.st_mode & 0o022 and not sticky_root and not _is_volume_root(ancestor, a):
        return (f"{ancestor} (a parent of {path}) is writable by group or others (mode "
                f"{stat.S_IMODE(a.st_mode):04o}): they could swap the directory")
    return None


def _is_volume_root(path: Path, st: os.stat_result) -> bool:
    """A tmpfs/ramfs mounted right here (a Kubernetes `emptyDir: {medium: Memory}` is
    created 0777 by the kubelet): who may write in it is decided by who mounts it (the
    pod's containers), not by its mode; other containers should mount it read-only."""
    try:
        parent = os.stat(path.parent)
    except OSError:
        return False
    return parent.st_dev != st.st_dev and filesystem_type(path) in _MEMORY_FS


def read_regular(path: Path, *, limit: int = 1024 * 1024) -> bytes:
    """Up to `limit` bytes of the regular file at `path`, opened without following a
    symlink at its last component and without blocking (a FIFO planted there must not
    hang start-up). Raises FileNotFoundError when absent, OSError otherwise."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        chunks, left = [], limit
        while left > 0 and (chunk := os.read(fd, min(left, 65536))):
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


@contextlib.contextmanager
def open_dir(path: Path) -> Iterator[int]:
    """Open a directory without following a symlink at its last component."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise OutputError(f"{path} is a symlink or not a directory; refusing it",
                              reason="symlink") from exc
        raise OutputError(f"cannot open {path}: {exc.strerror}", retryable=True,
                          reason=os_error_reason(exc)) from exc
    try:
        yield fd
    finally:
        os.close(fd)


def ensure_dir(parent_fd: int, name: str) -> None:
    """Create `name` (0700) under `parent_fd` if missing; refuse a symlink; re-apply 0700."""
    try:
        os.mkdir(name, DIR_MODE, dir_fd=parent_fd)
    except FileExistsError:
        pass
    except OSError as exc:
        raise OutputError(f"cannot create {name}/: {exc.strerror}", retryable=True,
                          reason=os_error_reason(exc)) from exc
    st = os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
    if not stat.S_ISDIR(st.st_mode):
        raise OutputError(f"{name} exists and is not a directory (symlink?); refusing it",
                          reason="symlink")
    _chmod_dir(parent_fd, name)


def _chmod_dir(parent_fd: int, name: str) -> None:
    # Linux has no lchmod; open the directory itself (O_NOFOLLOW) and fchmod it.
    fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                 dir_fd=parent_fd)
    try:
        os.fchmod(fd, DIR_MODE)
    finally:
        os.close(fd)


def write_file(dir_fd: int, name: str, data: bytes) -> None:
    """Atomically replace `name` in the directory with `data`, mode 0600."""
    try:
        existing = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        existing = None
    if existing is not None and not stat.S_ISREG(existing.st_mode):
        raise OutputError(f"{name} exists and is not a regular file (symlink?); refusing it",
                          reason="symlink")
    temp = f".{name}{TEMP_MARK}{secrets.token_hex(6)}"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(temp, flags, FILE_MODE, dir_fd=dir_fd)
    except OSError as exc:
        raise OutputError(f"cannot create a temp file for {name}: {exc.strerror}",
                          retryable=True, reason=os_error_reason(exc)) from exc
    try:
        try:
            os.fchmod(fd, FILE_MODE)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(temp, dir_fd=dir_fd)
        raise OutputError(f"cannot write {name}: {exc.strerror}", retryable=True,
                          reason=os_error_reason(exc)) from exc
    with contextlib.suppress(OSError):
        os.fsync(dir_fd)


def read_file(dir_fd: int, name: str, *, limit: int) -> bytes | None:
    """Up to `limit` bytes of regular file `name` in the directory, or None (absent, not a
    regular file, unreadable). Never follows a symlink and never blocks on a FIFO."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                     dir_fd=dir_fd)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        chunks, left = [], limit
        while left > 0 and (chunk := os.read(fd, min(left, 65536))):
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)
    except OSError:
        return None
    finally:
        os.close(fd)


def remove_file(dir_fd: int, name: str) -> None:
    """Remove `name` if present (an expired credential must disappear)."""
    try:
        os.unlink(name, dir_fd=dir_fd)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise OutputError(f"cannot remove {name}: {exc.strerror}", retryable=True,
                          reason=os_error_reason(exc)) from exc


def sweep_temp_files(dir_fd: int) -> int:
    """Delete temp files a killed process left behind (they may hold secrets)."""
    removed = 0
    for entry in os.listdir(dir_fd):
        if entry.startswith(".") and TEMP_MARK in entry:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(entry, dir_fd=dir_fd)
                removed += 1
    return removed


def os_error_reason(exc: OSError) -> str:
    """A bounded metric word for an OS error (disk_full, read_only, ...)."""
    return {errno.ENOSPC: "disk_full", errno.EROFS: "read_only", errno.EACCES: "permission",
            errno.EPERM: "permission", errno.EIO: "io_error", errno.EDQUOT: "disk_full",
            }.get(exc.errno or 0, "io_error")
