"""The cached mount table follows the kernel's: a mount or unmount after it was read is
seen at the next lookup (mountinfo's POLLPRI), so caching it never lets a write land on
a filesystem the check did not see."""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

from bridge.outputs.atomic import MountTable
from tests.support.require import unavailable


def _device(path: Path) -> str:
    st = os.stat(path)
    return f"{os.major(st.st_dev)}:{os.minor(st.st_dev)}"


def _mount(where: Path, fstype: str) -> bool:
    return subprocess.run(["mount", "-t", fstype, "-o", "size=64k", fstype, str(where)],
                          capture_output=True, check=False).returncode == 0


def test_a_mount_after_the_first_read_is_seen() -> None:
    where = Path(tempfile.mkdtemp(prefix="sb-mnt-", dir="/tmp"))
    table = MountTable("/proc/self/mountinfo")
    try:
        before = table.types()
        assert before.get(_device(where)) is not None  # /tmp's own filesystem
        if not _mount(where, "tmpfs"):
            unavailable("cannot mount a tmpfs here (needs root; CI runs as root and must "
                        "test this)")
        try:
            mounted = _device(where)
            assert mounted not in before
            assert table.types().get(mounted) == "tmpfs"
        finally:
            subprocess.run(["umount", str(where)], check=True)
        assert mounted not in table.types()  # the unmount is seen too
    finally:
        where.rmdir()


def test_an_unreadable_table_knows_no_filesystem(tmp_path: Path) -> None:
    assert MountTable(str(tmp_path / "missing")).types() == {}
