"""`source: x509` end to end on the dev stack: X.509-SVID -> Roles Anywhere -> [AssumeRole,
GCP] -> files, read by boto3 and checked against the emulators that issued them."""

from __future__ import annotations

import base64
import configparser
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from bridge.cli import main
from bridge.devstack import (
    DEMO_SERVICE_ACCOUNT,
    FROM_GCP_ROLE_ARN,
    GCP_AWS_PROVIDER,
    GCP_X509_PROVIDER,
    TENANT_ROLE_ARN,
    X509_ROLE_ARN,
    DevStack,
)
from bridge.x509_svid import key_secrets
from tests.conftest import WriteConfig
from tests.support.running import RunningBridge
from tests.support.wait import wait_for

pytestmark = pytest.mark.integration
DEMO_ID = "spiffe://example.org/demo"


@pytest.fixture
def stack(short_dir: Path) -> Iterator[DevStack]:
    """The dev stack with its X.509 CA and Roles Anywhere (overrides the JWT-only one)."""
    with DevStack(short_dir / "stack", x509=True) as started:
        yield started


def ra(stack: DevStack, **extra: object) -> dict[str, object]:
    return {"trust_anchor_arn": stack.trust_anchor_arn, "profile_arn": stack.profile_arn,
            "role_arn": X509_ROLE_ARN, "region": "us-east-1", "endpoint": stack.aws_sts_url,
            "sts_endpoint": stack.aws_sts_url, **extra}


def _identity(stack: DevStack, key: str, secret: str, token: str) -> str:
    """Who the emulator says these credentials are (GetCallerIdentity, SigV4-signed)."""
    client = boto3.client("sts", region_name="us-east-1", endpoint_url=stack.aws_sts_url,
                          aws_access_key_id=key, aws_secret_access_key=secret,
                          aws_session_token=token)
    return str(client.get_caller_identity()["Arn"])


def _profile(outdir: Path, name: str, monkeypatch: pytest.MonkeyPatch) -> tuple[str, str, str]:
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(outdir / "aws" / "credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", "/dev/null")
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    creds = boto3.session.Session(profile_name=name).get_credentials()
    assert creds is not None
    frozen = creds.get_frozen_credentials()
    return frozen.access_key, frozen.secret_key, frozen.token


def test_once_roles_anywhere_session_boto3_uses(
        stack: DevStack, write_config: WriteConfig, outdir: Path,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """The session CreateSession issued is what boto3 loads, and it is the x509 role's."""
    config = write_config(name="ra", source="x509", aws=ra(stack, duration="2h"))
    assert main(["once", "--config", str(config)]) == 0, capsys.readouterr()
    (request,) = stack.aws.roles_anywhere.requests
    assert request.code == ""
    assert request.headers["Authorization"].startswith("AWS4-X509-ECDSA-SHA256 Credential=")
    assert "X-Amz-X509-Chain" in request.headers  # the dev CA has an intermediate
    assert json.loads(request.body)["durationSeconds"] == 7200
    key, secret, token = _profile(outdir, "ra", monkeypatch)
    (issued,) = stack.aws.issued
    assert (key, secret, token) == (issued.access_key_id, issued.secret_access_key,
                                    issued.session_token)
    assert _identity(stack, key, secret, token).startswith(
        "arn:aws:sts::111122223333:assumed-role/x509-demo/")
    process = json.loads((outdir / "aws" / "ra.json").read_text())
    assert process["AccessKeyId"] == key
    assert process["Version"] == 1
    left = issued.expiration.timestamp() - time.time()
    assert 7100 < left <= 7200  # the requested 2h: AWS does not cap it at the SVID's notAfter


def test_roles_anywhere_then_assume_role(stack: DevStack, write_config: WriteConfig,
                                         outdir: Path, monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    """Roles Anywhere -> AssumeRole signed with its session (aws.chain shorthand)."""
    config = write_config(name="tenant", source="x509",
                          aws={**ra(stack), "chain": [{"role_arn": TENANT_ROLE_ARN}]})
    assert main(["once", "--config", str(config)]) == 0, capsys.readouterr()
    arn = _identity(stack, *_profile(outdir, "tenant", monkeypatch))
    assert arn.startswith("arn:aws:sts::444455556666:assumed-role/tenant/")


def test_roles_anywhere_then_gcp(stack: DevStack, write_config: WriteConfig, outdir: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    """Roles Anywhere -> GCP (the session as an aws4_request subject token) -> impersonation;
    google-auth's own external-account reader is not needed: the token file is read."""
    config = write_config(targets=[{
        "name": "ra2g", "source": "x509", "aws": ra(stack, duration="15m"),
        "chain": [{"gcp": {"workload_identity_provider": GCP_AWS_PROVIDER,
                           "service_account": DEMO_SERVICE_ACCOUNT,
                           "sts_endpoint": stack.gcp_sts_url,
                           "iam_credentials_endpoint": stack.gcp_iam_url}}]}])
    assert main(["once", "--config", str(config)]) == 0, capsys.readouterr()
    doc = json.loads((outdir / "gcp" / "ra2g.json").read_text())
    assert stack.gcp.whoami(doc["token"]) is not None


def test_rotation_refreshes_at_once_with_no_gap(stack: DevStack, write_config: WriteConfig,
                                                outdir: Path) -> None:
    """A new X.509-SVID makes the target re-sign within seconds (not at half its 1h
    session), and a valid credential is served throughout."""
    config = write_config(name="rot", source="x509", aws=ra(stack))
    bridge = RunningBridge(config)
    try:
        bridge.wait_delivered("rot")
        first = bridge.daemon.store.get("rot")
        assert first is not None
        assert first.credential is not None
        stack.workload.rotate_x509_svids()
        started = time.monotonic()

        def replaced() -> object | None:
            status = bridge.daemon.store.get("rot")
            assert status is not None
            assert status.valid_credential(time.monotonic()), "a gap during the rotation"
            assert status.credential is not None
            return status if status.credential is not first.credential else None

        wait_for(replaced, "a credential made with the rotated SVID", timeout=15)
        assert time.monotonic() - started < 15
        assert len(stack.aws.roles_anywhere.requests) == 2
        serials = {r.headers["Authorization"].split("Credential=")[1].split("/")[0]
                   for r in stack.aws.roles_anywhere.requests}
        assert len(serials) == 2  # signed by two different certificates
        assert bridge.daemon.metrics.sample("spiffe_bridge_x509_svid_rotations_total",
                                            target="rot") == 1
        leaf_expiry = bridge.daemon.metrics.sample(
            "spiffe_bridge_x509_svid_expiry_timestamp_seconds", target="rot")
        assert leaf_expiry is not None
        assert leaf_expiry > time.time() + 3000
        def written() -> bool:  # the writer follows the store (asynchronously)
            ini = configparser.ConfigParser()
            ini.read(outdir / "aws" / "credentials")
            return ini.has_section("rot") and (  # under load the first write may lag too
            ini["rot"]["aws_access_key_id"] == stack.aws.issued[-1].access_key_id)

        wait_for(written, "the new session in aws/credentials", timeout=10)
    finally:
        bridge.close()


def _pem() -> tuple[Any, ...]:
    from cryptography.hazmat.primitives import serialization as s

    return s.Encoding.PEM, s.PrivateFormat.PKCS8, s.NoEncryption()


def test_private_key_never_leaves_memory(stack: DevStack, write_config: WriteConfig,
                                         outdir: Path, short_dir: Path,
                                         capfd: pytest.CaptureFixture[str]) -> None:
    """Neither the logs (debug), the files, nor /metrics hold any part of the SVID key."""
    config = write_config(name="ra", source="x509", aws=ra(stack))
    assert main(["once", "--config", str(config), "--log-level", "DEBUG"]) == 0
    out, err = capfd.readouterr()
    issued = stack.workload.x509_svid(DEMO_ID)
    pieces = [p for p in key_secrets(issued.private_key) if len(p) >= 16]
    assert len(pieces) >= 2  # the whole PKCS#8 body and its PEM lines
    files = [p for p in outdir.rglob("*") if p.is_file()]
    assert files
    blobs = [out, err, *(p.read_text() for p in files)]
    bridge = RunningBridge(config)
    try:
        # it recovers what `once` wrote (and would wait for its schedule): refresh now
        (status,) = bridge.refresh_all()
        assert status.last_error is None, status.last_error_detail
        blobs.append(bridge.daemon.metrics.render().decode())
    finally:
        bridge.close()
    control = issued.private_key.private_bytes(*_pem()).decode()
    assert pieces[1] in control  # a PEM key in a blob would be seen
    for blob in blobs:
        assert not any(piece in blob for piece in pieces)


def _gcp_x509(stack: DevStack, **extra: object) -> dict[str, object]:
    return {"workload_identity_provider": GCP_X509_PROVIDER,
            "sts_endpoint": stack.gcp_mtls_sts_url,
            "iam_credentials_endpoint": stack.gcp_iam_url, **extra}


@pytest.mark.parametrize("service_account", [DEMO_SERVICE_ACCOUNT, None])
def test_gcp_x509_federation_over_mtls(
        stack: DevStack, write_config: WriteConfig, outdir: Path,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        service_account: str | None) -> None:
    """The exchange presents the SVID in the TLS handshake and sends its chain as the
    `mtls` subject token; then impersonation as for JWT-SVIDs (or the federated token)."""
    monkeypatch.setenv("SSL_CERT_FILE", str(stack.gcp_mtls_ca_file))
    gcp = _gcp_x509(stack, **({"service_account": service_account} if service_account
                              else {}))
    config = write_config(targets=[{"name": "g509", "source": "x509", "gcp": gcp}])
    assert main(["once", "--config", str(config)]) == 0, capsys.readouterr()
    assert stack.gcp_mtls is not None
    (exchange,) = stack.gcp_mtls.requests
    assert exchange.error == ""
    assert exchange.form["subject_token_type"] == "urn:ietf:params:oauth:token-type:mtls"
    chain = json.loads(exchange.form["subject_token"])
    issued = stack.workload.x509_svid(DEMO_ID)
    assert [base64.b64decode(c) for c in chain] == list(issued.chain)
    doc = json.loads((outdir / "gcp" / "g509.json").read_text())
    token = stack.gcp.whoami(doc["token"])
    assert token is not None
    if service_account:
        assert token.principal.endswith(service_account)
    else:
        assert token.subject == DEMO_ID
        assert token.principal.endswith(f"/workloadIdentityPools/spire/subject/{DEMO_ID}")


def test_gcp_x509_then_id_token_to_aws(stack: DevStack, write_config: WriteConfig,
                                       outdir: Path, monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    """X.509 GCP -> the service account's Google ID token -> AssumeRoleWithWebIdentity."""
    monkeypatch.setenv("SSL_CERT_FILE", str(stack.gcp_mtls_ca_file))
    config = write_config(targets=[{
        "name": "g2a", "source": "x509",
        "gcp": _gcp_x509(stack, service_account=DEMO_SERVICE_ACCOUNT),
        "chain": [{"aws": {"role_arn": FROM_GCP_ROLE_ARN, "region": "us-east-1",
                           "sts_endpoint": stack.aws_sts_url}}]}])
    assert main(["once", "--config", str(config)]) == 0, capsys.readouterr()
    arn = _identity(stack, *_profile(outdir, "g2a", monkeypatch))
    assert arn.startswith("arn:aws:sts::111122223333:assumed-role/from-gcp/")


def test_gcp_refuses_a_spiffe_id_outside_its_condition(
        stack: DevStack, write_config: WriteConfig, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(stack.gcp_mtls_ca_file))
    assert stack.gcp_mtls is not None
    assert stack.x509 is not None
    stack.gcp_mtls.add_x509_provider(GCP_X509_PROVIDER, stack.x509.roots,
                                     attribute_condition="spiffe://example.org/other")
    config = write_config(targets=[{"name": "g509", "source": "x509", "gcp": _gcp_x509(stack)}])
    assert main(["once", "--config", str(config)]) == 1
    out = capsys.readouterr()
    assert "unauthorized_client" in out.out + out.err
    (exchange,) = stack.gcp_mtls.requests
    assert exchange.error == "unauthorized_client"


def test_x509_files_only_when_asked(stack: DevStack, write_config: WriteConfig,
                                    outdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`x509_files: true` writes chain, key and bundle (0600, like spiffe-helper): the key
    is the SVID's, the chain its leaf and intermediate, the bundle the CA."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    config = write_config(name="ra", source="x509", x509_files=True, aws=ra(stack))
    assert main(["once", "--config", str(config)]) == 0, capsys.readouterr()
    issued = stack.workload.x509_svid(DEMO_ID)
    chain = x509.load_pem_x509_certificates((outdir / "x509" / "ra.pem").read_bytes())
    assert [c.public_bytes(serialization.Encoding.DER) for c in chain] == list(issued.chain)
    key = serialization.load_pem_private_key((outdir / "x509" / "ra.key.pem").read_bytes(),
                                             None)
    assert key.public_key() == chain[0].public_key()
    bundle = x509.load_pem_x509_certificates((outdir / "x509" / "ra.bundle.pem").read_bytes())
    assert stack.x509 is not None
    assert set(bundle) == set(stack.x509.roots)
    for name in ("ra.pem", "ra.key.pem", "ra.bundle.pem"):
        assert (outdir / "x509" / name).stat().st_mode & 0o777 == 0o600


def test_agent_restart_with_a_rotation_while_down(stack: DevStack, write_config: WriteConfig
                                                 ) -> None:
    """The agent goes away, the SVID rotates meanwhile, the agent comes back: the stream
    reconnects by itself and the target re-signs with the new SVID; the credential made
    before stays served throughout."""
    config = write_config(name="rot", source="x509", aws=ra(stack))
    bridge = RunningBridge(config)
    try:
        bridge.wait_delivered("rot")
        first = bridge.daemon.store.get("rot")
        assert first is not None
        stack.workload.stop()
        stack.workload.rotate_x509_svids()
        time.sleep(1.0)
        status = bridge.daemon.store.get("rot")
        assert status is not None
        assert status.valid_credential(time.monotonic()) is first.credential
        stack.workload.start()

        def resigned() -> object | None:
            now = bridge.daemon.store.get("rot")
            assert now is not None
            assert now.valid_credential(time.monotonic()) is not None
            return now if now.credential is not first.credential else None

        wait_for(resigned, "a credential signed with the SVID issued while down", timeout=20)
        leaf = stack.workload.x509_svid(DEMO_ID).chain[0]
        last = stack.aws.roles_anywhere.requests[-1].headers["X-Amz-X509"]
        assert base64.b64decode(last) == leaf
    finally:
        bridge.close()
