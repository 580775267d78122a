"""boto3's default credential chain, unmodified and configured only through the
documented environment variables, gets the bridge's credentials from the container
endpoint and from IMDSv2, and keeps getting the fresh ones as the daemon refreshes."""

from __future__ import annotations

import hashlib
import http.client
import os
from dataclasses import dataclass
from pathlib import Path

import pytest

from bridge.clouds.aws import AwsCredentials
from bridge.devstack.aws import AwsStsEmulator
from tests.integration.metadata.conftest import (
    Bridge,
    StartBridge,
    StsFactory,
    aws_target,
    run_client,
)
from tests.support.local_http import call

pytestmark = pytest.mark.integration
LIFETIME = 12.0  # real seconds per STS session: the daemon refreshes about every 3 s
NOWHERE = {"AWS_CONFIG_FILE": "/nonexistent/aws-config",
           "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/aws-credentials"}
ASSUMED = "arn:aws:sts::111122223333:assumed-role/demo/"


def _sha(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def _check_seen(bridge: Bridge, lines: list[dict[str, str]], *, method: str) -> None:
    """Each key the SDK was handed is one the store held, with its secret and token,
    and STS accepted it (GetCallerIdentity signed with it)."""
    by_key = {c.material.access_key_id: c.material for c in bridge.history
              if isinstance(c.material, AwsCredentials)}
    for line in lines:
        aws = by_key[line["key"]]
        assert (line["secret"], line["token"]) == (_sha(aws.secret_access_key),
                                                   _sha(aws.session_token))
        assert line["method"] == method
        assert line["arn"].startswith(ASSUMED)


@dataclass
class Setup:
    bridge: Bridge
    sts: AwsStsEmulator  # issues LIFETIME-second sessions; GetCallerIdentity goes here


@pytest.fixture
def setup(start_bridge: StartBridge, sts_factory: StsFactory) -> Setup:
    """Target `app` served on both AWS endpoints, refreshed every few seconds."""
    sts = sts_factory(LIFETIME)
    b = start_bridge([aws_target("app", sts, ["container", "imds"])], {
        "container": {"address": "127.0.0.1:0"},
        "imds": {"address": "127.0.0.1:0", "allowed_uids": [os.getuid()]}})
    b.wait_for(lambda: b.credential("app") is not None, "the first delivery")
    return Setup(b, sts)


def test_container_endpoint_default_chain_across_refreshes(setup: Setup,
                                                           short_dir: Path) -> None:
    """One long-lived boto3 session: botocore re-fetches (the credentials have less
    than its 15-minute window left), and each refresh of the daemon reaches it."""
    bridge = setup.bridge
    env = {"AWS_CONTAINER_CREDENTIALS_FULL_URI":
           f"{bridge.container.url}/v1/credentials/app",
           "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE": str(bridge.container.token_file),
           **NOWHERE}
    run = run_client(["aws", "--want", "3", "--timeout", "40",
                      "--sts", setup.sts.url], env, short_dir / "home")
    assert run.code == 0, (run.lines, run.stderr[-2000:])
    assert run.lines[0]["env"] == sorted(env)  # nothing else AWS_-ish was set
    seen = [line for line in run.lines if "key" in line]
    assert len({line["key"] for line in seen}) == 3
    _check_seen(bridge, seen, method="container-role")
    assert [k for k in bridge.keys("app") if k in {s["key"] for s in seen}] == [
        s["key"] for s in seen]  # in the order the daemon delivered them


def test_container_endpoint_wrong_token(setup: Setup, short_dir: Path) -> None:
    """botocore sends the file's content; the bridge answers 403, botocore gives up with
    the status in its error, and nothing secret is in the reply."""
    bridge = setup.bridge
    wrong = short_dir / "wrong.token"
    wrong.write_text("not-the-token")
    env = {"AWS_CONTAINER_CREDENTIALS_FULL_URI":
           f"{bridge.container.url}/v1/credentials/app",
           "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE": str(wrong), **NOWHERE}
    run = run_client(["aws", "--sts", setup.sts.url], env, short_dir / "home")
    assert run.code == 2
    error = run.first("error")
    assert error["error"] == "CredentialRetrievalError"
    assert "403" in error["message"]
    assert not any(s in error["message"] for s in bridge.all_secrets())
    port = bridge.container.port
    for headers, code in (({}, 401), ({"Authorization": "not-the-token"}, 403)):
        status, _, body = call(port, path="/v1/credentials/app", headers=headers)
        assert status == code
        assert not any(s.encode() in body for s in bridge.all_secrets())


def test_imds_default_chain_across_refreshes(setup: Setup, short_dir: Path) -> None:
    """IMDSv2 through AWS_EC2_METADATA_SERVICE_ENDPOINT: a new session per read (botocore
    stretches near-expiry IMDS credentials to 17-25 minutes on its side, so one session
    would keep its first key in a test this short), each one the full PUT/GET/GET flow."""
    bridge = setup.bridge
    imds = bridge.service("imds")
    env = {"AWS_EC2_METADATA_SERVICE_ENDPOINT": f"{imds.url}/", **NOWHERE}
    run = run_client(["aws", "--want", "2", "--timeout", "40", "--new-session",
                      "--sts", setup.sts.url], env, short_dir / "home")
    assert run.code == 0, (run.lines, run.stderr[-2000:])
    assert run.lines[0]["env"] == sorted(env)
    seen = [line for line in run.lines if "key" in line]
    assert len({line["key"] for line in seen}) == 2
    _check_seen(bridge, seen, method="iam-role")


def test_imds_refusals(setup: Setup) -> None:
    bridge = setup.bridge
    port = bridge.service("imds").port
    ttl = {"X-aws-ec2-metadata-token-ttl-seconds": "21600"}
    status, _, body = call(port, "PUT", "/latest/api/token",
                           headers={**ttl, "X-Forwarded-For": "192.0.2.1"})
    assert status == 403
    path = "/latest/meta-data/iam/security-credentials/app"
    for headers in ({}, {"X-aws-ec2-metadata-token": "bogus"}):
        status, _, body = call(port, path=path, headers=headers)
        assert status == 401
        assert not any(s.encode() in body for s in bridge.all_secrets())
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        token = call(port, "PUT", "/latest/api/token", headers=ttl, conn=conn)[2].decode()
        status, _, body = call(port, path=path, conn=conn,
                               headers={"X-aws-ec2-metadata-token": token,
                                        "Host": f"imds.rebind.example:{port}"})
        assert status == 403
        assert not any(s.encode() in body for s in bridge.all_secrets())
    finally:
        conn.close()
