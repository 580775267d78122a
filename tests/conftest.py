"""Fixtures for end-to-end runs of the bridge against the embedded dev stack."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from bridge.devstack import DevStack
from bridge.devstack.stack import DEMO_ROLE_ARN


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
