"""`source: x509` targets through the metadata endpoints: boto3's default chain reads a
Roles Anywhere session from the container endpoint and IMDSv2, google-auth's default
credentials a GCP X.509 federation token from the GCE endpoint, all unmodified SDKs in
fresh interpreters. The secrets check of `start_bridge` also covers the SVID key."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge.clouds.aws import AwsCredentials
from bridge.clouds.gcp.material import GcpToken
from bridge.devstack import DEMO_SERVICE_ACCOUNT, GCP_X509_PROVIDER, X509_ROLE_ARN, DevStack
from bridge.x509_svid import key_secrets
from tests.integration.metadata.conftest import StartBridge, run_client

pytestmark = pytest.mark.integration
NOWHERE = {"AWS_CONFIG_FILE": "/nonexistent/aws-config",
           "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/aws-credentials"}


@pytest.fixture
def stack(short_dir: Path) -> Iterator[DevStack]:
    with DevStack(short_dir / "stack", x509=True) as started:
        yield started


def _sha(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def test_sdks_read_x509_targets_from_every_endpoint(
        stack: DevStack, start_bridge: StartBridge, short_dir: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(stack.gcp_mtls_ca_file))  # the in-process daemon
    bridge = start_bridge([
        {"name": "ra", "source": "x509", "serve": ["container", "imds"],
         "aws": {"trust_anchor_arn": stack.trust_anchor_arn, "profile_arn": stack.profile_arn,
                 "role_arn": X509_ROLE_ARN, "region": "us-east-1",
                 "endpoint": stack.aws_sts_url}},
        {"name": "g509", "source": "x509", "serve": ["gce"],
         "gcp": {"workload_identity_provider": GCP_X509_PROVIDER,
                 "service_account": DEMO_SERVICE_ACCOUNT,
                 "sts_endpoint": stack.gcp_mtls_sts_url,
                 "iam_credentials_endpoint": stack.gcp_iam_url}},
    ], {"container": {"address": "127.0.0.1:0"},
        "imds": {"address": "127.0.0.1:0", "allowed_uids": [os.getuid()]},
        "gce": {"address": "127.0.0.1:0", "allowed_uids": [os.getuid()]}})
    bridge.wait_for(lambda: bridge.credential("ra") is not None
                    and bridge.credential("g509") is not None, "both delivered")
    bridge.secrets.update(key_secrets(stack.workload.x509_svid("spiffe://example.org/demo")
                                      .private_key))
    ra = bridge.credential("ra")
    assert ra is not None
    assert isinstance(ra.material, AwsCredentials)
    for env, method in (
            ({"AWS_CONTAINER_CREDENTIALS_FULL_URI": f"{bridge.container.url}/v1/credentials/ra",
              "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE": str(bridge.container.token_file)},
             "container-role"),
            ({"AWS_EC2_METADATA_SERVICE_ENDPOINT": f"{bridge.service('imds').url}/"},
             "iam-role")):
        run = run_client(["aws", "--sts", stack.aws_sts_url], {**env, **NOWHERE},
                         short_dir / "home")
        assert run.code == 0, (run.lines, run.stderr[-2000:])
        line = run.first("key")
        assert (line["key"], line["secret"], line["token"], line["method"]) == (
            ra.material.access_key_id, _sha(ra.material.secret_access_key),
            _sha(ra.material.session_token), method)
        assert line["arn"].startswith("arn:aws:sts::111122223333:assumed-role/x509-demo/")
    gce = bridge.service("gce")
    run = run_client(["gce"], {"GCE_METADATA_HOST": gce.address, "GCE_METADATA_IP": gce.address,
                               "CLOUDSDK_CONFIG": str(short_dir / "no-gcloud")},
                     short_dir / "home")
    assert run.code == 0, (run.lines, run.stderr[-2000:])
    g509 = bridge.credential("g509")
    assert g509 is not None
    assert isinstance(g509.material, GcpToken)
    got = run.first("kind")
    assert (got["email"], got["token"]) == (DEMO_SERVICE_ACCOUNT,
                                            _sha(g509.material.access_token))
