"""The bridge on real SPIRE: JWT-SVIDs minted by spire-server, handed out by spire-agent,
verified by the cloud emulators through the OIDC Discovery Provider's documents."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import boto3
import pytest
import urllib3
from google.auth import identity_pool
from google.auth.transport.urllib3 import Request
from spiffe import SpiffeId
from spiffe.errors import PySpiffeError

from tests.integration.spire.conftest import (
    RunOnce,
    StartBridge,
    WriteBridgeConfig,
    wait_for_sample,
)
from tests.support.spire import (
    AWS_AUDIENCE,
    DEFAULT_JWT_TTL,
    GCP_PROVIDER,
    ROLE_A,
    ROLE_ANY,
    ROLE_B,
    SERVICE_ACCOUNT,
    TRUST_DOMAIN,
    WORKLOAD_A,
    WORKLOAD_B,
    WORKLOAD_B_TTL,
    SpireDeployment,
    jwt_claims,
    jwt_header,
    wait_until,
)

pytestmark = pytest.mark.integration


def _aws(spire: SpireDeployment, role: str, **extra: Any) -> dict[str, Any]:
    return {"role_arn": role, "region": "us-east-1", "sts_endpoint": spire.aws.url, **extra}


def _gcp(spire: SpireDeployment, **extra: Any) -> dict[str, Any]:
    return {"workload_identity_provider": GCP_PROVIDER, "sts_endpoint": spire.gcp.sts_url,
            "iam_credentials_endpoint": spire.gcp.url, **extra}


def _web_identity_tokens(spire: SpireDeployment) -> list[str]:
    return [r.params["WebIdentityToken"] for r in spire.aws.requests
            if r.action == "AssumeRoleWithWebIdentity"]


def _isolated_aws_env(monkeypatch: pytest.MonkeyPatch, credentials: Path) -> None:
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(credentials))
    monkeypatch.setenv("AWS_CONFIG_FILE", "/dev/null")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                "AWS_PROFILE", "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE"):
        monkeypatch.delenv(var, raising=False)


def test_aws_and_gcp_credentials_from_real_jwt_svids(
        spire: SpireDeployment, bridge_config: WriteBridgeConfig, run_once: RunOnce,
        outdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """One run: SPIRE's JWT-SVIDs become AWS credentials boto3 signs with and a GCP token
    google-auth can also obtain itself from the JWT file; every token the clouds saw was
    minted by spire-server with `iss` = the discovery issuer and a key it publishes."""
    spire.aws.clear_requests()
    spire.gcp.clear_requests()
    config = bridge_config([
        {"name": "s3", "spiffe_id": WORKLOAD_A, "aws": _aws(spire, ROLE_A)},
        {"name": "bq", "spiffe_id": WORKLOAD_A, "audience": GCP_PROVIDER, "jwt_file": True,
         "gcp": _gcp(spire, service_account=SERVICE_ACCOUNT, external_account_file=True)},
    ])
    result = run_once(config)
    for name, status in result.statuses.items():
        assert status.consecutive_failures == 0, (name, status.last_error_detail)

    # What the AWS STS emulator verified: a real SPIRE JWT-SVID.
    (token,) = _web_identity_tokens(spire)
    header, claims = jwt_header(token), jwt_claims(token)
    assert header["alg"] == "ES256"
    assert header["typ"] == "JWT"
    assert header["kid"] in spire.published_kids()
    assert claims["iss"] == spire.issuer
    assert claims["sub"] == WORKLOAD_A
    assert claims["aud"] == [AWS_AUDIENCE]
    assert claims["exp"] - claims["iat"] == DEFAULT_JWT_TTL
    discovery = spire.discovery_document()
    assert discovery["issuer"] == spire.issuer
    assert discovery["jwks_uri"] == spire.issuer + "/keys"

    # boto3 loads the profile and signs a real call with it (the emulator checks SigV4).
    _isolated_aws_env(monkeypatch, outdir / "aws" / "credentials")
    sts = boto3.session.Session(profile_name="s3").client(
        "sts", region_name="us-east-1", endpoint_url=spire.aws.url)
    identity = sts.get_caller_identity()
    assert identity["Arn"].startswith(
        "arn:aws:sts::111122223333:assumed-role/spire-workload-a/")

    # GCP: the service account's token, written by the bridge ...
    doc = json.loads((outdir / "gcp" / "bq.json").read_text())
    owner = spire.gcp.whoami(doc["token"])
    assert owner is not None
    assert owner.principal == f"serviceAccount:{SERVICE_ACCOUNT}"
    sts_form = next(r.form for r in spire.gcp.requests if r.operation == "token")
    gcp_claims = jwt_claims(sts_form["subject_token"])
    assert (gcp_claims["iss"], gcp_claims["sub"], gcp_claims["aud"]) == (
        spire.issuer, WORKLOAD_A, [GCP_PROVIDER])
    # ... and google-auth exchanging SPIRE's JWT-SVID from the JWT file by itself.
    external = json.loads((outdir / "gcp" / "bq.external_account.json").read_text())
    creds = identity_pool.Credentials.from_info(external).with_scopes(
        ["https://www.googleapis.com/auth/cloud-platform"])
    creds.refresh(Request(urllib3.PoolManager()))
    assert creds.valid
    sdk_owner = spire.gcp.whoami(creds.token)
    assert sdk_owner is not None
    assert sdk_owner.principal == f"serviceAccount:{SERVICE_ACCOUNT}"


def test_svid_ttl_shorter_than_the_credential_lifetime(
        spire: SpireDeployment, bridge_config: WriteBridgeConfig, run_once: RunOnce) -> None:
    """A 90 s JWT-SVID buys a 1 h AWS session: the credential outlives the SVID, and the
    SVID expiry metric and state carry the SVID's own `exp`, not the credential's."""
    spire.aws.clear_requests()
    config = bridge_config([{"name": "long", "spiffe_id": WORKLOAD_A,
                             "aws": _aws(spire, ROLE_ANY, duration="1h")}])
    before = time.time()
    result = run_once(config)
    status = result.statuses["long"]
    assert status.consecutive_failures == 0, status.last_error_detail
    credential = status.credential
    assert credential is not None
    (token,) = _web_identity_tokens(spire)
    svid_exp = jwt_claims(token)["exp"]
    assert svid_exp - before <= DEFAULT_JWT_TTL + 1
    assert credential.svid_expires_at == svid_exp
    assert credential.expires_at - before == pytest.approx(3600, abs=5)
    assert credential.expires_at - svid_exp > 3600 - DEFAULT_JWT_TTL - 5
    assert result.sample("svid_expiry_timestamp_seconds", target="long") == svid_exp
    assert result.sample("credential_expiry_timestamp_seconds",
                         target="long") == credential.expires_at
    assert result.sample("credential_state", target="long", state="fresh") == 1


def test_spiffe_id_selects_among_two_entries_for_the_same_uid(
        spire: SpireDeployment, bridge_config: WriteBridgeConfig, run_once: RunOnce) -> None:
    """Two entries match this uid: the agent hands out both, and `spiffe_id` picks one
    per target (ROLE_A trusts only workload/a, ROLE_B only workload/b, whose entry has a
    120 s JWT TTL); the wrong pick is refused by the trust policy."""
    with spire.workload_client() as client:
        both = client.fetch_jwt_svids({AWS_AUDIENCE})
        assert {str(s.spiffe_id) for s in both} == {WORKLOAD_A, WORKLOAD_B}
        only_b = client.fetch_jwt_svid({AWS_AUDIENCE}, subject=SpiffeId(WORKLOAD_B))
        assert str(only_b.spiffe_id) == WORKLOAD_B

    spire.aws.clear_requests()
    config = bridge_config([
        {"name": "a", "spiffe_id": WORKLOAD_A, "aws": _aws(spire, ROLE_A)},
        {"name": "b", "spiffe_id": WORKLOAD_B, "aws": _aws(spire, ROLE_B)},
        {"name": "crossed", "spiffe_id": WORKLOAD_B, "aws": _aws(spire, ROLE_A)},
    ])
    result = run_once(config)
    assert result.statuses["a"].consecutive_failures == 0
    assert result.statuses["b"].consecutive_failures == 0
    crossed = result.statuses["crossed"]
    assert crossed.credential is None
    assert crossed.last_error == "access_denied"

    seen = set()
    for r in spire.aws.requests:
        claims = jwt_claims(r.params["WebIdentityToken"])
        seen.add((r.params["RoleArn"], claims["sub"], claims["exp"] - claims["iat"]))
    assert seen == {(ROLE_A, WORKLOAD_A, DEFAULT_JWT_TTL), (ROLE_B, WORKLOAD_B, WORKLOAD_B_TTL),
                    (ROLE_A, WORKLOAD_B, WORKLOAD_B_TTL)}
    subjects = {c.role_arn: c.subject for c in spire.aws.issued[-2:]}
    assert subjects == {ROLE_A: WORKLOAD_A, ROLE_B: WORKLOAD_B}
    assert result.sample("refresh_failures_total", target="crossed", stage="aws_web_identity",
                         reason="access_denied") == 1


def test_no_entry_is_permission_denied_and_retried_until_registered(
        spire: SpireDeployment, bridge_process: StartBridge) -> None:
    """A `spiffe_id` this workload has no entry for: the agent answers PermissionDenied
    ("no identity issued"), the bridge counts it as a retryable svid failure and keeps
    retrying; once the entry is created (and synced) the next retry delivers."""
    late = f"spiffe://{TRUST_DOMAIN}/late/{int(time.time() * 1000)}"
    with pytest.raises(PySpiffeError, match=r"PERMISSION_DENIED|no identity issued"):
        spire.fetch_jwt(AWS_AUDIENCE, late, timeout=5)

    bridge = bridge_process([{"name": "late", "spiffe_id": late,
                              "aws": _aws(spire, ROLE_ANY)}])
    try:
        wait_for_sample(bridge, "refresh_failures_total", lambda v: v >= 1, 15,
                        target="late", stage="svid", reason="permission_denied")
        status, body = bridge.readyz()
        assert status == 503
        assert body["targets"]["late"]["last_error"] == "permission_denied"
        assert bridge.sample("permanent_failure", target="late") == 0
        # the agent answered: the Workload API is up, it just has nothing for us
        assert bridge.sample("workload_api_up") == 1

        spire.create_entry(late)
        wait_until(lambda: bridge.target("late")["state"] == "fresh", 30,
                   "the bridge to deliver once the entry exists")
        assert bridge.readyz()[0] == 200
        assert spire.aws.issued[-1].subject == late
        failures = bridge.sample("refresh_failures_total", target="late", stage="svid",
                                 reason="permission_denied")
        assert failures is not None
        assert failures >= 1
    finally:
        if late in spire.entries:
            spire.delete_entry(late)
