"""A running bridge with the gRPC API on a unix socket, against the dev stack."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from bridge.devstack import DevStack
from tests.support.configs import CALLER, aws_target, gcp_target
from tests.support.running import RunningBridge, StartBridge


@pytest.fixture
def start_bridge(stack: DevStack, outdir: Path, short_dir: Path) -> Iterator[StartBridge]:
    """Start a bridge on `targets` (default: one open AWS target, one guarded AWS target
    and one guarded GCP target) and wait for every first credential."""
    running: list[RunningBridge] = []

    def start(targets: list[dict[str, object]] | None = None,
              grpc: dict[str, object] | None = None) -> RunningBridge:
        doc = {
            "workload_api": {"socket": stack.workload_socket_uri, "timeout": "5s"},
            "outputs": {"directory": str(outdir)},
            "http": {"address": "127.0.0.1:0"},
            "grpc": {"socket": f"unix://{short_dir}/api/bridge.sock", **(grpc or {})},
            "targets": targets if targets is not None else [
                aws_target(stack, "open"),
                aws_target(stack, "guarded", allowed_callers=[CALLER]),
                gcp_target(stack, "guarded-gcp", allowed_callers=["spiffe://example.org/ns/apps/*"]),
            ],
        }
        path = short_dir / "bridge.yaml"
        path.write_text(yaml.safe_dump(doc))
        bridge = RunningBridge(path)
        running.append(bridge)
        bridge.wait_delivered()
        return bridge

    yield start
    for bridge in running:
        bridge.close()


@pytest.fixture
def socket_uri(short_dir: Path) -> str:
    return f"unix://{short_dir}/api/bridge.sock"
