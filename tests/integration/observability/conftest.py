"""One live deployment for the observability tests: dev stack, the bridge as a process,
and a real Prometheus scraping it with our rules loaded.

The bridge serves three targets, each on its own STS emulator, so one run shows every
series a dashboard panel or an alert reads:

- `demo`: the first exchange answers 503, the retry succeeds: fresh, with failure series.
- `down`: every exchange answers 503: never delivered, not ready, refresh alert pending;
  a directory planted at `aws/down.json` makes removing that file fail, so output write
  failures are counted too.
- `skewed`: its STS clock runs 14 minutes behind, so a 15-minute session has one minute
  left. The bridge refreshes it after 15 s; by then every exchange answers 503, so the
  target goes stale while its credential is still valid.
- `x509`: `source: x509` through the stack's Roles Anywhere: the X.509-SVID series.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from bridge.devstack import (
    AZURE_CLIENT_ID,
    AZURE_STORAGE_SCOPE,
    AZURE_TENANT_ID,
    DEMO_ROLE_ARN,
    X509_ROLE_ARN,
    DevStack,
    HttpFailure,
)
from bridge.devstack.aws import ASSUME_ROLE_WITH_WEB_IDENTITY, AwsStsEmulator
from bridge.devstack.azure import OP_TOKEN as AZURE_TOKEN
from tests.support.process import start_bridge, stop
from tests.support.prometheus import (
    ALERTS,
    Prometheus,
    free_port,
    http_json,
    require_tool,
)
from tests.support.values import trusting_sts
from tests.support.wait import wait_for

SKEWED_LIFETIME = 60  # seconds left on a 15-minute session from the skewed STS
UNAVAILABLE = HttpFailure(503, "ServiceUnavailable")
FOREVER = 10_000  # queued failures: far more than the run can consume


@dataclass
class Deployment:
    stack: DevStack
    prometheus: Prometheus
    bridge_address: str
    bridge_log: Path
    down_sts: AwsStsEmulator
    skewed_sts: AwsStsEmulator
    skewed_delivered_at: float

    def readyz(self) -> tuple[int, dict[str, Any]]:
        return http_json(f"http://{self.bridge_address}/readyz")

    def log_tail(self) -> str:
        return self.bridge_log.read_text(errors="replace")[-3000:]


def _emulator(stack: DevStack, *, skew: float = 0.0) -> AwsStsEmulator:
    """A second STS trusting the stack's issuer, optionally with its clock behind."""
    return trusting_sts(stack, offset=-skew, short_lived=True)


def _target(name: str, sts: AwsStsEmulator) -> dict[str, object]:
    return {"name": name, "aws": {"role_arn": DEMO_ROLE_ARN, "region": "us-east-1",
                                  "duration": "15m", "sts_endpoint": sts.url}}


def _x509_target(stack: DevStack) -> dict[str, object]:
    return {"name": "x509", "source": "x509", "aws": {
        "trust_anchor_arn": stack.trust_anchor_arn, "profile_arn": stack.profile_arn,
        "role_arn": X509_ROLE_ARN, "region": "us-east-1", "endpoint": stack.aws_sts_url}}


@pytest.fixture(scope="package")
def deployment() -> Iterator[Deployment]:
    """Stack, bridge process and Prometheus, started once and torn down in reverse order."""
    binary = require_tool("prometheus")
    with contextlib.ExitStack() as cleanup:
        workdir = Path(tempfile.mkdtemp(prefix="sb-obs-", dir="/tmp"))
        cleanup.callback(shutil.rmtree, workdir, True)
        shm = Path(tempfile.mkdtemp(prefix="sb-obs-", dir="/dev/shm"))
        cleanup.callback(shutil.rmtree, shm, True)

        stack = DevStack(workdir / "stack", x509=True).start()
        cleanup.callback(stack.stop)
        down_sts = _emulator(stack)
        cleanup.callback(down_sts.stop)
        skewed_sts = _emulator(stack, skew=15 * 60 - SKEWED_LIFETIME)
        cleanup.callback(skewed_sts.stop)
        stack.aws.faults.fail_next(ASSUME_ROLE_WITH_WEB_IDENTITY, UNAVAILABLE, times=1)
        stack.azure.retry_after = 1  # one Entra outage first, retried after 1 s
        stack.azure.faults.fail_next(AZURE_TOKEN, HttpFailure(503, "temporarily_unavailable"))
        down_sts.faults.fail_next(ASSUME_ROLE_WITH_WEB_IDENTITY, UNAVAILABLE, times=FOREVER)

        outdir = shm / "creds"
        (outdir / "aws" / "down.json").mkdir(mode=0o700, parents=True)
        outdir.chmod(0o700)
        (outdir / "aws").chmod(0o700)
        address = f"127.0.0.1:{free_port()}"
        config = {
            "workload_api": {"socket": stack.workload_socket_uri, "timeout": "5s"},
            "outputs": {"directory": str(outdir)},
            "http": {"address": address},
            "grpc": {"socket": f"unix://{shm}/bridge.sock"},
            "targets": [_target("demo", stack.aws), _target("down", down_sts),
                        _target("skewed", skewed_sts), _x509_target(stack),
                        {"name": "demo-azure", "azure": {  # Azure targets are covered too
                            "tenant_id": AZURE_TENANT_ID, "client_id": AZURE_CLIENT_ID,
                            "scopes": [AZURE_STORAGE_SCOPE],
                            "authority_host": stack.azure_authority}}],
            # a broker-less workload target: its rule-labelled series exist from the start
            "workloads": {"grpc_socket": f"unix://{shm}/workload.sock"},
            "workload_targets": [{**_target("per-workload", stack.aws),
                                  "match": "spiffe://example.org/ns/{ns}",
                                  "serve": {"grpc": True}}],
        }
        config_path = workdir / "bridge.yaml"
        config_path.write_text(yaml.safe_dump(config))

        log_path = workdir / "bridge.log"
        bridge = start_bridge("run", "--config", str(config_path), "--log-format", "json",
                              log=log_path,
                              env={**os.environ, "REQUESTS_CA_BUNDLE": str(stack.ca_file)})
        cleanup.callback(stop, bridge)

        (workdir / "prometheus").mkdir()
        prometheus = Prometheus(workdir / "prometheus", [address], [ALERTS])
        prometheus.start(binary)
        cleanup.callback(prometheus.stop)

        def skewed_fresh() -> bool:
            if bridge.poll() is not None:
                raise AssertionError(f"bridge exited {bridge.returncode}: "
                                     f"{log_path.read_text()[-3000:]}")
            try:
                _, body = http_json(f"http://{address}/readyz", timeout=2)
            except OSError:
                return False
            return bool(body["targets"]["skewed"]["state"] == "fresh")

        wait_for(skewed_fresh, "the skewed target's first delivery", timeout=30)
        # From now on its STS fails, so its refresh (about 15 s from now) leaves it stale.
        skewed_sts.faults.fail_next(ASSUME_ROLE_WITH_WEB_IDENTITY, UNAVAILABLE, times=FOREVER)
        yield Deployment(stack=stack, prometheus=prometheus, bridge_address=address,
                         bridge_log=log_path, down_sts=down_sts, skewed_sts=skewed_sts,
                         skewed_delivered_at=time.monotonic())
