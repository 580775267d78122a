"""Fault scenario: clock skew of ±5 minutes between this host and the cloud STS.

The STS emulator runs on a clock 5 minutes ahead or behind; it judges the JWT-SVID's
`exp`/`iat` and stamps `Date` and `Expiration` with that clock. With SVIDs that live
longer than the skew (SPIRE's `default_jwt_svid_ttl` raised to 15 min) the bridge gets
credentials either way; with 5-minute SVIDs and STS 5 minutes ahead, STS sees them
expired on arrival: the failure is classified (token_expired, retried with a fresh SVID)
and nothing is served. In every case the bridge exports the skew it measured from
`Date` and warns, so the operator learns why. RELIABILITY.md (a) row 10; every test
runs under the never-expired checker (harness.ExpiryChecker).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from bridge.devstack import (
    DEMO_ROLE_ARN,
    DEMO_SERVICE_ACCOUNT,
    GCP_PROVIDER,
    DevStack,
)
from bridge.devstack.aws import AwsStsEmulator
from tests.support.expiry import StartChecker
from tests.support.running import RunningBridge
from tests.support.values import trusting_sts

pytestmark = pytest.mark.integration


@pytest.fixture
def long_svid_stack(short_dir: Path) -> Iterator[DevStack]:
    with DevStack(short_dir / "stack15", svid_ttl=900) as started:
        yield started


def _config(stack: DevStack, sts: AwsStsEmulator, outdir: Path, short_dir: Path) -> Path:
    doc = {
        "workload_api": {"socket": stack.workload_socket_uri, "timeout": "5s"},
        "outputs": {"directory": str(outdir)},
        "http": {"address": "127.0.0.1:0"},
        "grpc": {"socket": f"unix://{short_dir}/bridge.sock"},
        "targets": [
            {"name": "aws", "aws": {"role_arn": DEMO_ROLE_ARN, "region": "us-east-1",
                                    "sts_endpoint": sts.url}},
            {"name": "gcp", "gcp": {"workload_identity_provider": GCP_PROVIDER,
                                    "service_account": DEMO_SERVICE_ACCOUNT,
                                    "sts_endpoint": stack.gcp_sts_url,
                                    "iam_credentials_endpoint": stack.gcp_iam_url}},
        ],
    }
    path = short_dir / "bridge.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.mark.parametrize("offset", [+300.0, -300.0], ids=["sts-ahead-5m", "sts-behind-5m"])
def test_skewed_sts_still_serves_and_the_skew_is_exported(
        offset: float, long_svid_stack: DevStack, outdir: Path, short_dir: Path,
        caplog: pytest.LogCaptureFixture, expiry_checker: StartChecker) -> None:
    stack = long_svid_stack
    sts = trusting_sts(stack, offset=offset)
    with caplog.at_level(logging.WARNING, logger="bridge.skew"):
        bridge = RunningBridge(_config(stack, sts, outdir, short_dir))
        checker = expiry_checker(bridge, aws=[sts], gcp=[stack.gcp])
        try:
            bridge.wait_delivered()
            checker.wait_served("grpc:aws")
            checker.wait_served("file:aws/aws.json")
            registry = bridge.daemon.metrics.registry
            aws_skew = registry.get_sample_value("spiffe_bridge_clock_skew_seconds",
                                                 {"service": "aws_sts"})
            gcp_skew = registry.get_sample_value("spiffe_bridge_clock_skew_seconds",
                                                 {"service": "gcp"})
            held = bridge.daemon.store.get("aws")
        finally:
            checker.stop()
            bridge.close()
            sts.stop()
    assert aws_skew is not None
    assert abs(aws_skew - offset) <= 2.0, aws_skew
    assert gcp_skew is not None
    assert abs(gcp_skew) <= 2.0, gcp_skew
    assert held is not None
    assert held.credential is not None
    # Expiration is in the STS's time; the bridge carries it over in this host's terms
    # (Expiration minus the answer's Date), so SDKs here see the hour they were given.
    assert abs(held.credential.expires_at - (time.time() + 3600)) < 30
    warned = [r.getMessage() for r in caplog.records if "clock skew against aws_sts" in
              r.getMessage()]
    assert warned
    assert ("+" if offset > 0 else "-") in warned[0]


def test_short_svids_against_an_sts_ahead_are_refused_and_classified(
        stack: DevStack, outdir: Path, short_dir: Path, expiry_checker: StartChecker) -> None:
    """5-minute SVIDs, STS 5 minutes ahead: token_expired (retryable), skew exported; once
    STS's clock is known, its SVIDs are judged by it and no longer sent (svid_expiring)."""
    sts = trusting_sts(stack, offset=+300.0)
    bridge = RunningBridge(_config(stack, sts, outdir, short_dir))
    checker = expiry_checker(bridge, aws=[sts], gcp=[stack.gcp])
    try:
        bridge.wait_delivered("gcp")
        checker.wait_served("grpc:gcp")
        deadline = time.monotonic() + 20
        while (status := bridge.daemon.store.get("aws")) is None or not status.last_error:
            assert time.monotonic() < deadline, "the refresh never failed"
            time.sleep(0.05)
        registry = bridge.daemon.metrics.registry
        skew = registry.get_sample_value("spiffe_bridge_clock_skew_seconds",
                                         {"service": "aws_sts"})
        sent = [r for r in sts.requests if r.action == "AssumeRoleWithWebIdentity"]
    finally:
        checker.stop()
        bridge.close()
        sts.stop()
    assert sent  # the first SVID was sent, and STS refused it as expired (no credential)
    assert status.last_error in {"token_expired", "svid_expiring"}
    assert not status.last_error_permanent
    assert status.credential is None
    assert skew is not None
    assert abs(skew - 300) <= 2.0
