"""GCP targets and cross-cloud chains end to end on the dev stack, through `once`."""

from __future__ import annotations

import configparser
import itertools
import json
import time
from datetime import datetime
from pathlib import Path

import google.oauth2.credentials
import pytest

from bridge.cli import main
from bridge.devstack import (
    DEMO_ROLE_ARN,
    DEMO_SERVICE_ACCOUNT,
    FROM_GCP_ROLE_ARN,
    GCP_AWS_PROVIDER,
    GCP_PROVIDER,
    TENANT_ROLE_ARN,
    DevStack,
)
from bridge.devstack.gcp import pool_principal_set
from tests.conftest import WriteConfig

pytestmark = pytest.mark.integration


def _gcp(stack: DevStack, **extra: object) -> dict[str, object]:
    return {"workload_identity_provider": GCP_PROVIDER, "sts_endpoint": stack.gcp_sts_url,
            "iam_credentials_endpoint": stack.gcp_iam_url, **extra}


def _aws(stack: DevStack, role: str = DEMO_ROLE_ARN, **extra: object) -> dict[str, object]:
    return {"role_arn": role, "region": "us-east-1", "sts_endpoint": stack.aws_sts_url, **extra}


def _once(config: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(["once", "--config", str(config)])
    return code, capsys.readouterr().out


def _gcp_doc(outdir: Path, name: str) -> dict[str, str]:
    return dict(json.loads((outdir / "gcp" / f"{name}.json").read_text()))


def test_gcp_target_with_impersonation(stack: DevStack, write_config: WriteConfig,
                                       outdir: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    """JWT-SVID -> GCP STS -> generateAccessToken: google-auth loads the service account's token."""
    config = write_config(targets=[{"name": "bq", "gcp": _gcp(
        stack, service_account=DEMO_SERVICE_ACCOUNT)}])
    code, out = _once(config, capsys)
    assert code == 0, out
    doc = _gcp_doc(outdir, "bq")
    owner = stack.gcp.whoami(doc["token"])
    assert owner is not None
    assert owner.principal == f"serviceAccount:{DEMO_SERVICE_ACCOUNT}"
    assert (outdir / "gcp" / "bq.token").read_text() == doc["token"]
    creds = google.oauth2.credentials.Credentials(
        token=doc["token"], expiry=datetime.strptime(doc["expiry"], "%Y-%m-%dT%H:%M:%SZ"))
    assert creds.valid
    sts = [r for r in stack.gcp.requests if r.path.endswith("/token")]
    assert sts
    assert sts[0].form["subject_token_type"] == "urn:ietf:params:oauth:token-type:jwt"
    assert sts[0].form["audience"] == GCP_PROVIDER
    assert "authorization" not in {k.lower() for k in sts[0].headers}


def test_gcp_target_direct_resource_access(stack: DevStack, write_config: WriteConfig,
                                           outdir: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    """Without a service account the federated token itself is written."""
    config = write_config(targets=[{"name": "direct", "gcp": _gcp(stack)}])
    code, out = _once(config, capsys)
    assert code == 0, out
    owner = stack.gcp.whoami(_gcp_doc(outdir, "direct")["token"])
    assert owner is not None
    assert owner.principal.startswith("principal://")
    assert not [r for r in stack.gcp.requests if "generateAccessToken" in r.path]


@pytest.mark.parametrize("depth", [1, 3])
def test_delegation_chains(stack: DevStack, write_config: WriteConfig, outdir: Path,
                           capsys: pytest.CaptureFixture[str], depth: int) -> None:
    """GCP->GCP through 1 or 3 delegates succeeds; removing one binding breaks it clearly."""
    delegates = [f"hop{i}@dev-project.iam.gserviceaccount.com" for i in range(depth)]
    final = "final@dev-project.iam.gserviceaccount.com"
    stack.gcp.add_service_account(delegates[0],
                                  workload_identity_users=[pool_principal_set(GCP_PROVIDER)])
    for prev, nxt in itertools.pairwise(delegates):
        stack.gcp.add_service_account(nxt, token_creators=[prev])
    stack.gcp.add_service_account(final, token_creators=[delegates[-1]])
    config = write_config(targets=[{"name": "deleg", "gcp": _gcp(
        stack, service_account=final, delegates=delegates)}])
    code, out = _once(config, capsys)
    assert code == 0, out
    owner = stack.gcp.whoami(_gcp_doc(outdir, "deleg")["token"])
    assert owner is not None
    assert owner.principal == f"serviceAccount:{final}"
    # remove the binding of the last hop: permission denied, named as such
    stack.gcp.add_service_account(final, token_creators=[])
    code, out = _once(config, capsys)
    assert code == 1
    assert "gcp_iam: PERMISSION_DENIED" in out


def test_lifetime_above_the_maximum_is_reported_as_a_config_problem(
        stack: DevStack, write_config: WriteConfig,
        capsys: pytest.CaptureFixture[str]) -> None:
    """2h on a service account limited to 1h: Google's INVALID_ARGUMENT, a permanent failure."""
    config = write_config(targets=[{"name": "long", "gcp": _gcp(
        stack, service_account=DEMO_SERVICE_ACCOUNT, lifetime="2h")}])
    code, out = _once(config, capsys)
    assert code == 1
    assert "gcp_iam: INVALID_ARGUMENT" in out


def test_aws_to_aws_chain(stack: DevStack, write_config: WriteConfig, outdir: Path,
                          capsys: pytest.CaptureFixture[str]) -> None:
    """Web identity into the demo role, then AssumeRole into the tenant role."""
    config = write_config(targets=[{"name": "tenant", "aws": {
        **_aws(stack), "chain": [{"role_arn": TENANT_ROLE_ARN}]}}])
    code, out = _once(config, capsys)
    assert code == 0, out
    actions = [r.params["Action"] for r in stack.aws.requests]
    assert actions == ["AssumeRoleWithWebIdentity", "AssumeRole"]
    chained = stack.aws.requests[1]
    assert chained.params["RoleArn"] == TENANT_ROLE_ARN
    assert "Authorization" in chained.headers or "authorization" in chained.headers
    ini = configparser.ConfigParser()
    ini.read(outdir / "aws" / "credentials")
    tenant_key = ini["tenant"]["aws_access_key_id"]
    issued = {c.access_key_id: c for c in stack.aws.issued}
    assert ":assumed-role/tenant/" in issued[tenant_key].assumed_role_arn


def test_aws_to_gcp_chain(stack: DevStack, write_config: WriteConfig, outdir: Path,
                          capsys: pytest.CaptureFixture[str]) -> None:
    """The AWS session is the subject token (aws4_request) of a GCP AWS provider."""
    config = write_config(targets=[{
        "name": "a2g", "aws": _aws(stack, duration="15m"),
        "chain": [{"gcp": {**_gcp(stack, service_account=DEMO_SERVICE_ACCOUNT),
                           "workload_identity_provider": GCP_AWS_PROVIDER}}]}])
    code, out = _once(config, capsys)
    assert code == 0, out
    doc = _gcp_doc(outdir, "a2g")
    assert stack.gcp.whoami(doc["token"]) is not None
    sts = [r for r in stack.gcp.requests if r.path.endswith("/token")]
    assert sts[0].form["subject_token_type"] == "urn:ietf:params:aws:token-type:aws4_request"
    # the chain's expiry is its earliest hop: the 15-minute AWS session, not the 1h token
    aws_expiry = stack.aws.issued[0].expiration
    written = datetime.strptime(doc["expiry"], "%Y-%m-%dT%H:%M:%SZ").timestamp()
    # never later; earlier by at most the whole seconds of the file and of STS's Date
    assert 0 <= _epoch(aws_expiry) - written <= 2
    assert written - time.time() < 16 * 60


def test_gcp_to_aws_chain(stack: DevStack, write_config: WriteConfig, outdir: Path,
                          capsys: pytest.CaptureFixture[str]) -> None:
    """A Google ID token for the service account goes to AssumeRoleWithWebIdentity."""
    config = write_config(targets=[{
        "name": "g2a", "gcp": _gcp(stack, service_account=DEMO_SERVICE_ACCOUNT),
        "chain": [{"aws": _aws(stack, FROM_GCP_ROLE_ARN)}]}])
    code, out = _once(config, capsys)
    assert code == 0, out
    assert [r.params["Action"] for r in stack.aws.requests] == ["AssumeRoleWithWebIdentity"]
    assert any("generateIdToken" in r.path for r in stack.gcp.requests)
    doc = json.loads((outdir / "aws" / "g2a.json").read_text())
    issued = {c.access_key_id: c for c in stack.aws.issued}
    assert ":assumed-role/from-gcp/" in issued[doc["AccessKeyId"]].assumed_role_arn


@pytest.mark.parametrize("shape", ["aws-aws", "aws-gcp", "gcp-aws"])
def test_a_broken_trust_in_the_middle_names_the_hop(stack: DevStack, write_config: WriteConfig,
                                                    capsys: pytest.CaptureFixture[str],
                                                    shape: str) -> None:
    """Removing the middle trust fails the target with the hop and the error class named."""
    if shape == "aws-aws":
        stack.aws.add_role(TENANT_ROLE_ARN, trusted_principals=["arn:aws:iam::1:role/nobody"])
        target = {"name": "x", "aws": {**_aws(stack), "chain": [{"role_arn": TENANT_ROLE_ARN}]}}
        expected = "hop 2/2 aws_assume_role: AccessDenied"
    elif shape == "aws-gcp":
        stack.gcp.set_provider_enabled(GCP_AWS_PROVIDER, False)
        target = {"name": "x", "aws": _aws(stack), "chain": [{"gcp": {
            **_gcp(stack, service_account=DEMO_SERVICE_ACCOUNT),
            "workload_identity_provider": GCP_AWS_PROVIDER}}]}
        expected = "hop 2/2 gcp_sts: invalid_target"
    else:
        stack.aws.add_role(FROM_GCP_ROLE_ARN, provider_url=stack.google_issuer,
                           aud="sts.amazonaws.com", sub="000000000000000000000")
        target = {"name": "x", "gcp": _gcp(stack, service_account=DEMO_SERVICE_ACCOUNT),
                  "chain": [{"aws": _aws(stack, FROM_GCP_ROLE_ARN)}]}
        expected = "hop 3/3 aws_web_identity: AccessDenied"
    code, out = _once(write_config(targets=[target]), capsys)
    assert code == 1
    assert expected in out


def test_no_gcp_secret_reaches_the_logs(stack: DevStack, write_config: WriteConfig,
                                        outdir: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Access tokens, federated tokens and SVIDs never appear in any record at DEBUG."""
    caplog.set_level("DEBUG")
    config = write_config(targets=[{
        "name": "g2a", "gcp": _gcp(stack, service_account=DEMO_SERVICE_ACCOUNT),
        "chain": [{"aws": _aws(stack, FROM_GCP_ROLE_ARN)}]}])
    assert main(["once", "--log-level", "DEBUG", "--config", str(config)]) == 0
    text = "\n".join(r.getMessage() + str(getattr(r, "fields", "")) for r in caplog.records)
    for token in stack.gcp.issued:
        assert token.token not in text
    for creds in stack.aws.issued:
        assert creds.secret_access_key not in text
        assert creds.session_token not in text
    assert "eyJ" not in text
    assert "ya29." not in text


def _epoch(value: object) -> float:
    if isinstance(value, datetime):
        return value.timestamp()
    return float(value)  # type: ignore[arg-type]


def test_requests_carry_exactly_the_documented_fields(stack: DevStack, write_config: WriteConfig,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """STS gets the RFC 8693 form fields; IAM gets scope, lifetime and delegates (PROTOCOLS §6)."""
    config = write_config(targets=[{"name": "bq", "gcp": _gcp(
        stack, service_account=DEMO_SERVICE_ACCOUNT, lifetime="30m",
        scopes=["https://www.googleapis.com/auth/bigquery"])}])
    code, out = _once(config, capsys)
    assert code == 0, out
    token_requests = [r for r in stack.gcp.requests if r.operation == "token"]
    assert len(token_requests) == 1, "one STS exchange per refresh"
    token_request = token_requests[0]
    assert set(token_request.form) == {"grant_type", "audience", "scope",
                                       "requested_token_type", "subject_token",
                                       "subject_token_type"}
    assert token_request.form["grant_type"] == (
        "urn:ietf:params:oauth:grant-type:token-exchange")
    assert token_request.form["requested_token_type"] == (
        "urn:ietf:params:oauth:token-type:access_token")
    iam = next(r for r in stack.gcp.requests if r.operation == "generateAccessToken")
    assert set(iam.json_body) == {"scope", "lifetime", "delegates"}
    assert iam.json_body["scope"] == ["https://www.googleapis.com/auth/bigquery"]
    assert iam.json_body["lifetime"] == "1800s"
    assert iam.headers.get("Authorization", iam.headers.get("authorization", "")).startswith(
        "Bearer ")


def test_external_account_file_refreshes_through_google_auth(
        stack: DevStack, write_config: WriteConfig, outdir: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """google-auth loads gcp/<t>.external_account.json and exchanges the JWT file itself."""
    import urllib3
    from google.auth import identity_pool
    from google.auth.transport.urllib3 import Request

    config = write_config(targets=[{"name": "sdk", "jwt_file": True, "audience": GCP_PROVIDER,
                                    "gcp": _gcp(stack, service_account=DEMO_SERVICE_ACCOUNT,
                                                external_account_file=True)}])
    code, out = _once(config, capsys)
    assert code == 0, out
    doc = json.loads((outdir / "gcp" / "sdk.external_account.json").read_text())
    # Client libraries supply their scopes, as google.auth.default(scopes=...) does.
    creds = identity_pool.Credentials.from_info(doc).with_scopes(
        ["https://www.googleapis.com/auth/cloud-platform"])
    stack.gcp.clear_requests()
    creds.refresh(Request(urllib3.PoolManager()))
    assert creds.valid
    owner = stack.gcp.whoami(creds.token)
    assert owner is not None
    assert owner.principal == f"serviceAccount:{DEMO_SERVICE_ACCOUNT}"
    sent = next(r for r in stack.gcp.requests if r.operation == "token")
    assert sent.form["subject_token"] == (outdir / "jwt" / "sdk.jwt").read_text()
