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
import stat
from collections.abc import Iterator
from pathlib import Path

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
