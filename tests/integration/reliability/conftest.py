"""Fixtures for the reliability suite: one fake agent + clouds per module, reset per test."""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from bridge.devstack import DevStack, Identity
from bridge.devstack.stack import DEMO_ROLE_ARN, DEMO_SERVICE_ACCOUNT, GCP_PROVIDER

DEMO = "spiffe://example.org/demo"
OTHER = "spiffe://example.org/other"


@pytest.fixture(scope="module")
def module_dir() -> Iterator[Path]:
    """A short directory under /tmp (AF_UNIX paths are limited to 107 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="sbr-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def module_outdir() -> Iterator[Path]:
    base = Path(tempfile.mkdtemp(prefix="sbr-out-", dir="/dev/shm"))
    yield base / "creds"
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def agent(module_dir: Path) -> Iterator[DevStack]:
    """A started dev stack whose agent holds two identities (the bridge asks for DEMO)."""
    with DevStack(module_dir / "stack", identities=(DEMO, Identity(OTHER, hint="other"))) as s:
        yield s


@pytest.fixture
def honest_agent(agent: DevStack) -> Iterator[DevStack]:
    """The module's stack with every fault switch off and no recorded requests, before
    and after the test; the log handler an in-process `main()` installed (on this test's
    captured stderr, closed afterwards) is taken off again."""
    def clean() -> None:
        agent.workload.faults.reset()
        agent.aws.clear_requests()
        agent.gcp.clear_requests()
    clean()
    yield agent
    clean()
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, "_spiffe_bridge", False)]:
        root.removeHandler(handler)


@pytest.fixture(scope="module")
def two_cloud_config(agent: DevStack, module_dir: Path, module_outdir: Path) -> Path:
    """An AWS and a GCP target, both asking for the DEMO identity."""
    doc = {
        "workload_api": {"socket": agent.workload_socket_uri, "timeout": "5s"},
        "outputs": {"directory": str(module_outdir)},
        "http": {"address": "127.0.0.1:0"},
        "grpc": {"socket": f"unix://{module_dir}/bridge.sock"},
        "targets": [
            {"name": "aws", "spiffe_id": DEMO,
             "aws": {"role_arn": DEMO_ROLE_ARN, "region": "us-east-1",
                     "sts_endpoint": agent.aws_sts_url}},
            {"name": "gcp", "spiffe_id": DEMO,
             "gcp": {"workload_identity_provider": GCP_PROVIDER,
                     "service_account": DEMO_SERVICE_ACCOUNT,
                     "sts_endpoint": agent.gcp_sts_url,
                     "iam_credentials_endpoint": agent.gcp_iam_url}},
        ],
    }
    path = module_dir / "bridge.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path
