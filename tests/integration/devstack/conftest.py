"""Fixtures for dev-stack integration tests: a started DevStack and its clients."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import botocore
import pytest
import spiffe
from botocore.config import Config

from bridge.devstack import DevStack, Identity

DEMO_ID = "spiffe://example.org/demo"
OTHER_ID = "spiffe://example.org/other"


@pytest.fixture
def stack(short_dir: Path) -> Iterator[DevStack]:
    """A started stack issuing two identities (the second with a hint)."""
    with DevStack(short_dir, identities=(DEMO_ID, Identity(OTHER_ID, hint="other"))) as started:
        yield started


@pytest.fixture
def workload(stack: DevStack) -> Iterator[spiffe.WorkloadApiClient]:
    """A py-spiffe client on the stack's agent socket."""
    client = spiffe.WorkloadApiClient(stack.workload_socket_uri, default_timeout=5)
    yield client
    client.close()


@pytest.fixture
def sts(stack: DevStack) -> Any:
    """An unsigned boto3 STS client on the emulator, without retries."""
    return boto3.client(
        "sts",
        region_name="us-east-1",
        endpoint_url=stack.aws_sts_url,
        config=Config(signature_version=botocore.UNSIGNED, retries={"total_max_attempts": 1}),
    )
