"""Fixtures for end-to-end runs of the bridge against the embedded dev stack."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import subprocess
import tempfile
import time
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from bridge.devstack import DEMO_ROLE_ARN, DevStack
from bridge.devstack.aws import AwsStsEmulator
from bridge.devstack.azure import EntraEmulator
from bridge.devstack.gcp import GcpEmulator
from bridge.logs import pin_third_party_loggers


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A directory under /tmp: pytest's tmp_path can exceed the 107-byte AF_UNIX limit."""
    path = Path(tempfile.mkdtemp(prefix="sb-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def stack(short_dir: Path) -> Iterator[DevStack]:
    with DevStack(short_dir / "stack") as started:
        yield started


@pytest.fixture
def outdir() -> Iterator[Path]:
    """An output directory on tmpfs, as production requires."""
    base = Path(tempfile.mkdtemp(prefix="sb-out-", dir="/dev/shm"))
    yield base / "creds"
    shutil.rmtree(base, ignore_errors=True)


WriteConfig = Callable[..., Path]


@pytest.fixture
def write_config(stack: DevStack, outdir: Path, short_dir: Path) -> WriteConfig:
    """Write a bridge config for the stack; keyword overrides edit the first target."""

    def write(targets: list[dict[str, object]] | None = None, **target: object) -> Path:
        default: dict[str, object] = {
            "name": "demo",
            "aws": {"role_arn": DEMO_ROLE_ARN, "region": "us-east-1",
                    "sts_endpoint": stack.aws_sts_url},
        }
        default.update(target)
        doc = {
            "workload_api": {"socket": stack.workload_socket_uri, "timeout": "5s"},
            "outputs": {"directory": str(outdir)},
            "http": {"address": "127.0.0.1:0"},
            "grpc": {"socket": f"unix://{short_dir}/bridge.sock"},
            "targets": targets if targets is not None else [default],
        }
        path = short_dir / "bridge.yaml"
        path.write_text(yaml.safe_dump(doc))
        return path

    return write


@pytest.fixture
def small_tmpfs() -> Iterator[Path]:
    """A private 64 KiB tmpfs, so a test can fill it or make it read-only (needs root:
    skipped without it, a failure under CI=true)."""
    mnt = Path(f"/tmp/sb-mnt-{os.getpid()}-{time.monotonic_ns()}")
    mnt.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k,mode=0700", "tmpfs",
                              str(mnt)], capture_output=True, check=False).returncode == 0
    if not mounted:
        from tests.support.require import unavailable  # here: the suite-hook tests copy
        mnt.rmdir()                                      # this file where tests.* is not
        unavailable("cannot mount a tmpfs here (needs root; CI runs as root and must test this)")
    try:
        yield mnt
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(mnt)], check=False,
                       capture_output=True)
        subprocess.run(["umount", "-l", str(mnt)], check=False)
        with contextlib.suppress(OSError):
            mnt.rmdir()


# -- secrets never reach a log line ------------------------------------------------------
# Every test runs with the bridge's loggers at DEBUG and the SDK loggers pinned as the
# daemon pins them. Afterwards, every captured record (ours at any level, anyone's at
# WARNING and above) is scanned for each secret the dev-stack emulators issued and for
# anything shaped like a JWT or a Google access token.
_EMULATORS: weakref.WeakSet[object] = weakref.WeakSet()
_SHAPES = re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]+|ya29\.[\w.-]{20,}")


@pytest.fixture(autouse=True, scope="session")
def _track_emulators() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as patch:
        for cls in (AwsStsEmulator, GcpEmulator, EntraEmulator):
            original = cls.__init__

            def tracking(self: object, *a: object, _original: Any = original,
                         **kw: object) -> None:
                _original(self, *a, **kw)
                _EMULATORS.add(self)
            patch.setattr(cls, "__init__", tracking)
        yield


def _issued_secrets() -> set[str]:
    found: set[str] = set()
    for emulator in list(_EMULATORS):
        for issued in getattr(emulator, "issued", ()):
            for attr in ("secret_access_key", "session_token", "token", "access_token"):
                value = getattr(issued, attr, None)
                if isinstance(value, str) and len(value) >= 16:
                    found.add(value)
    return found


@pytest.fixture(autouse=True)
def _no_secret_in_logs(request: pytest.FixtureRequest,
                       caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    pin_third_party_loggers()
    caplog.set_level(logging.DEBUG, logger="bridge")
    yield
    if request.node.get_closest_marker("logs_secrets_on_purpose"):
        return
    secrets = _issued_secrets()
    leaks = []
    for record in caplog.records:
        if not (record.name.startswith("bridge") or record.levelno >= logging.WARNING):
            continue
        text = record.getMessage() + (logging.Formatter().formatException(record.exc_info)
                                      if record.exc_info else "")
        if _SHAPES.search(text) or any(s in text for s in secrets):
            leaks.append(f"{record.name}:{record.levelname}: {text[:200]}")
    assert not leaks, "secret material in log records:\n" + "\n".join(leaks)


# -- nothing of ours left in /tmp or /dev/shm ---------------------------------------------
# Every temporary directory a test process makes there is recorded (tempfile.mkdtemp is
# how fixtures and helpers make them), and /tmp and /dev/shm are listed before and after
# for names of ours (`sb…`, `spiffe-bridge…`), which also catches what the daemons and
# `dev` left. What this process made and left fails the run; a new name of ours made by
# someone else fails it under CI=true (where nothing else runs) and is only reported
# locally, where other runs may share the machine.
_SCRATCH = (Path("/tmp"), Path("/dev/shm"))
_OURS = re.compile(r"(sb[a-z]*-|spiffe-bridge).*")
_LEFT = pytest.StashKey[list[str]]()


def _ours_in_scratch() -> set[Path]:
    found: set[Path] = set()
    for directory in _SCRATCH:
        with contextlib.suppress(OSError):
            found.update(p for p in directory.iterdir() if _OURS.fullmatch(p.name))
    return found


@pytest.fixture(autouse=True, scope="session")
def _nothing_left_in_scratch(request: pytest.FixtureRequest) -> Iterator[None]:
    before = _ours_in_scratch()
    made: list[Path] = []
    original = tempfile.mkdtemp

    def recording(*args: Any, **kwargs: Any) -> str:
        path: str = original(*args, **kwargs)
        made.append(Path(path))
        return path

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tempfile, "mkdtemp", recording)
        yield
    mine = sorted(str(p) for p in made if p.parent in _SCRATCH and p.exists())
    others = sorted(str(p) for p in _ours_in_scratch() - before if str(p) not in mine)
    if os.environ.get("CI") == "true":
        mine, others = mine + others, []
    request.config.stash[_LEFT] = others
    assert not mine, f"tests left {len(mine)} of our directories behind: {', '.join(mine)}"


# -- the closing summary: tests skipped for a missing tool --------------------------------
_INSTALL_MARK = "(install: "  # every missing-tool skip names its installer so
INSTALL_ALL = "make tools"  # tests/tools/install-all.sh: what .ci/run installs


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int,
                            config: pytest.Config) -> None:
    """How many tests a missing tool skipped, and the one command that installs them all;
    entries of ours that appeared in /tmp or /dev/shm from elsewhere (local runs)."""
    skipped = terminalreporter.stats.get("skipped", [])
    missing = [r for r in skipped if _INSTALL_MARK in str(getattr(r, "longrepr", ""))]
    if missing:
        terminalreporter.write_sep("-", "missing tools")
        terminalreporter.write_line(f"{len(missing)} test{'s' if len(missing) != 1 else ''} "
                                    f"skipped for a missing tool; install them all with: "
                                    f"{INSTALL_ALL}")
    others = config.stash.get(_LEFT, [])
    if others:
        terminalreporter.write_line(f"note: {len(others)} new name(s) of ours in /tmp or "
                                    "/dev/shm not made by this process (another run's, or a "
                                    f"daemon's): {', '.join(others)}")
