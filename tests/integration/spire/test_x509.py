"""Real SPIRE v1.15.3 X.509-SVIDs: accepted by the Roles Anywhere and GCP mTLS
emulators (trust anchor = SPIRE's own CA bundle), and followed across the agent's own
rotations with no moment without a valid credential."""

from __future__ import annotations

import configparser
import time
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from cryptography import x509

from bridge.devstack.gcp.x509_sts import GcpMtlsSts
from tests.integration.spire.conftest import StartBridge, wait_for_sample
from tests.support.spire import SERVICE_ACCOUNT, TRUST_DOMAIN, SpireDeployment

pytestmark = pytest.mark.integration

WORKLOAD_X = f"spiffe://{TRUST_DOMAIN}/workload/x509"
X509_TTL = 30  # seconds: the agent renews at half life, so a rotation every ~15 s
ROLE_X509 = "arn:aws:iam::111122223333:role/spire-x509"
GCP_X509 = ("//iam.googleapis.com/projects/424242/locations/global/workloadIdentityPools/"
            "spire/providers/real-spire-x509")


@pytest.fixture
def x509_entry(spire: SpireDeployment) -> Iterator[str]:
    spire.create_entry(WORKLOAD_X, x509_ttl=X509_TTL)
    spire.wait_for_identity(WORKLOAD_X)  # the agent has synced the entry
    yield WORKLOAD_X
    spire.delete_entry(WORKLOAD_X)


@pytest.fixture
def mtls_sts(spire: SpireDeployment, short_dir: Path,
             monkeypatch: pytest.MonkeyPatch) -> Iterator[GcpMtlsSts]:
    """Google's mTLS token endpoint trusting SPIRE's CA, issuing into the GCP emulator."""
    sts = GcpMtlsSts(spire.gcp.token_store)
    sts.add_x509_provider(GCP_X509, _spire_roots(spire),
                          attribute_condition=f"spiffe://{TRUST_DOMAIN}/*")
    sts.start()
    ca = short_dir / "mtls-ca.pem"
    ca.write_bytes(sts.server_ca_pem)
    monkeypatch.setenv("SSL_CERT_FILE", str(ca))  # the bridge process inherits it
    yield sts
    sts.stop()


def _spire_roots(spire: SpireDeployment) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(spire.server_cli("bundle", "show").encode())


def test_real_x509_svids_through_both_clouds_across_rotations(
        spire: SpireDeployment, x509_entry: str, mtls_sts: GcpMtlsSts,
        bridge_process: StartBridge, outdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ra = spire.aws.roles_anywhere
    anchor = ra.add_trust_anchor(_spire_roots(spire))
    ra.add_role(ROLE_X509, san_uri=f"spiffe://{TRUST_DOMAIN}/workload/*")
    profile = ra.add_profile([ROLE_X509])
    bridge = bridge_process([
        {"name": "ra", "source": "x509", "spiffe_id": WORKLOAD_X,
         "aws": {"trust_anchor_arn": anchor, "profile_arn": profile, "role_arn": ROLE_X509,
                 "region": "us-east-1", "endpoint": spire.aws.url}},
        {"name": "g509", "source": "x509", "spiffe_id": WORKLOAD_X,
         "gcp": {"workload_identity_provider": GCP_X509, "service_account": SERVICE_ACCOUNT,
                 "sts_endpoint": mtls_sts.url, "iam_credentials_endpoint": spire.gcp.url}},
    ])
    wait_for_sample(bridge, "credential_state", lambda v: v == 1, 30, target="ra",
                    state="fresh")
    wait_for_sample(bridge, "credential_state", lambda v: v == 1, 30, target="g509",
                    state="fresh")
    # Two rotations of the agent's own, followed by both targets, and never a moment
    # without a valid credential for either.
    deadline = time.monotonic() + 4 * X509_TTL
    while time.monotonic() < deadline:
        targets = bridge.readyz()[1]["targets"]
        assert targets["ra"]["ready"], targets["ra"]
        assert targets["g509"]["ready"], targets["g509"]
        rotations = min(bridge.sample("x509_svid_rotations_total", target=t) or 0
                        for t in ("ra", "g509"))
        # counted when the refresh starts: wait for the exchanges themselves too
        if rotations >= 2 and min(len(ra.requests), len(mtls_sts.requests)) >= 3:
            break
        time.sleep(0.2)
    else:
        raise AssertionError(f"fewer than two rotations followed: {bridge.tail()}")
    accepted = [r for r in ra.requests if r.code == ""]
    assert len(accepted) == len(ra.requests) >= 3
    serials = {r.headers["Authorization"].split("Credential=")[1].split("/")[0]
               for r in accepted}
    assert len(serials) >= 3  # three SPIRE-issued certificates signed
    exchanges = [e for e in mtls_sts.requests if e.error == ""]
    assert len(exchanges) == len(mtls_sts.requests) >= 3
    # What the files hold is a live session of the x509 role, by boto3 and the emulator.
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(outdir / "aws" / "credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", "/dev/null")
    ini = configparser.ConfigParser()
    ini.read(outdir / "aws" / "credentials")
    client = boto3.client("sts", region_name="us-east-1", endpoint_url=spire.aws.url,
                          aws_access_key_id=ini["ra"]["aws_access_key_id"],
                          aws_secret_access_key=ini["ra"]["aws_secret_access_key"],
                          aws_session_token=ini["ra"]["aws_session_token"])
    assert "assumed-role/spire-x509/" in client.get_caller_identity()["Arn"]
    token = (outdir / "gcp" / "g509.token").read_text()
    principal = spire.gcp.whoami(token)
    assert principal is not None
    assert principal.principal.endswith(SERVICE_ACCOUNT)
