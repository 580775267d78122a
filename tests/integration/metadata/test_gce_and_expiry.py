"""google-auth's Compute Engine credentials against the GCE emulation, unmodified and
pointed at the bridge only by GCE_METADATA_HOST/GCE_METADATA_IP; then what every
endpoint answers once a target has no valid credential."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pytest

from bridge.clouds.gcp import GcpToken
from bridge.devstack import DEMO_SERVICE_ACCOUNT, GCP_PROVIDER, DevStack, HttpFailure
from bridge.devstack.aws import ASSUME_ROLE_WITH_WEB_IDENTITY
from tests.integration.metadata.conftest import (
    Bridge,
    StartBridge,
    StsFactory,
    aws_target,
    run_client,
)
from tests.support.local_http import call

pytestmark = pytest.mark.integration
FLAVOR = {"Metadata-Flavor": "Google"}
TOKEN_PATH = "/computeMetadata/v1/instance/service-accounts/default/token"
FOREVER = 10_000


def gcp_target(stack: DevStack, name: str = "bq") -> dict[str, Any]:
    return {"name": name, "serve": ["gce"],
            "gcp": {"workload_identity_provider": GCP_PROVIDER,
                    "service_account": DEMO_SERVICE_ACCOUNT,
                    "sts_endpoint": stack.gcp_sts_url,
                    "iam_credentials_endpoint": stack.gcp_iam_url}}


def no_material(bridge: Bridge, body: bytes) -> bool:
    return not any(s.encode() in body for s in bridge.all_secrets())


def test_google_auth_default_and_compute_engine_credentials(
        stack: DevStack, start_bridge: StartBridge, short_dir: Path) -> None:
    bridge = start_bridge([gcp_target(stack)], {"gce": {"address": "127.0.0.1:0",
                                                            "allowed_uids": [os.getuid()]}})
    bridge.wait_for(lambda: bridge.credential("bq") is not None, "the first delivery")
    gce = bridge.service("gce")
    env = {"GCE_METADATA_HOST": gce.address, "GCE_METADATA_IP": gce.address,
           "CLOUDSDK_CONFIG": str(short_dir / "no-gcloud")}
    run = run_client(["gce"], env, short_dir / "home")
    assert run.code == 0, (run.lines, run.stderr[-2000:])
    got = run.first("kind")
    credential = bridge.credential("bq")
    assert credential is not None
    assert isinstance(credential.material, GcpToken)
    want = hashlib.sha256(credential.material.access_token.encode()).hexdigest()
    assert got["kind"] == "google.auth.compute_engine.credentials.Credentials"
    assert (got["project"], got["email"], got["token"]) == ("dev-project",
                                                            DEMO_SERVICE_ACCOUNT, want)
    assert got["scopes"] == ["https://www.googleapis.com/auth/cloud-platform"]
    explicit = run.first("explicit_token")
    assert (explicit["explicit_token"], explicit["explicit_email"]) == (want,
                                                                       DEMO_SERVICE_ACCOUNT)
    # the same token the Google emulator issued for the service account
    assert stack.gcp.whoami(credential.material.access_token) is not None

    port = gce.port
    for headers in ({}, {**FLAVOR, "Host": f"metadata.google.internal:{port}"},
                    {**FLAVOR, "Host": "attacker.example"},
                    {**FLAVOR, "X-Forwarded-For": "203.0.113.5"}):
        status, reply_headers, body = call(port, path=TOKEN_PATH, headers=headers)
        assert status == 403
        assert reply_headers["Metadata-Flavor"] == "Google"
        assert no_material(bridge, body)


def test_expired_and_undelivered_targets_get_503_everywhere(
        stack: DevStack, start_bridge: StartBridge, sts_factory: StsFactory) -> None:
    """AWS: delivered, then STS fails and the 5-second session runs out. GCP: the
    exchange fails from the start. Each endpoint answers 503 and hands out nothing."""
    sts = sts_factory(5.0)
    stack.gcp.faults.fail_next("generateAccessToken", HttpFailure(503, "UNAVAILABLE"),
                               times=FOREVER)
    bridge = start_bridge([aws_target("short", sts, ["container", "imds"]),
                           gcp_target(stack)],
                          {"container": {"address": "127.0.0.1:0"},
                           "imds": {"address": "127.0.0.1:0", "allowed_uids": [os.getuid()]},
                           "gce": {"address": "127.0.0.1:0", "allowed_uids": "any"}})
    bridge.wait_for(lambda: bridge.credential("short") is not None, "the AWS delivery")
    sts.faults.fail_next(ASSUME_ROLE_WITH_WEB_IDENTITY, HttpFailure(503, "ServiceUnavailable"),
                         times=FOREVER)
    bridge.wait_for(lambda: bridge.status("short").state == "expired",
                    "the AWS credential to expire and be dropped")
    assert bridge.status("bq").credential is None

    container = bridge.container
    status, _, body = call(container.port, path="/v1/credentials/short",
                           headers={"Authorization": container.token_file.read_text()})
    assert status == 503
    assert json.loads(body)["Code"] == "CredentialUnavailable"
    assert no_material(bridge, body)

    imds = bridge.service("imds")
    token = call(imds.port, "PUT", "/latest/api/token",
                 headers={"X-aws-ec2-metadata-token-ttl-seconds": "60"})[2].decode()
    status, _, body = call(imds.port, path="/latest/meta-data/iam/security-credentials/short",
                           headers={"X-aws-ec2-metadata-token": token})
    assert status == 503
    assert no_material(bridge, body)

    status, headers, body = call(bridge.service("gce").port, path=TOKEN_PATH, headers=FLAVOR)
    assert (status, headers["Metadata-Flavor"]) == (503, "Google")
    assert no_material(bridge, body)
