"""Chains into and out of Azure on the dev stack, through `once`: each end to end, the
expiry written the earliest of the hops, and a clear failure naming the hop when the
trust in the middle is removed."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bridge.cli import main
from bridge.devstack import (
    AZURE_APP_OBJECT_ID,
    AZURE_APP_RESOURCE,
    AZURE_CLIENT_ID,
    AZURE_TENANT_ID,
    DEMO_ROLE_ARN,
    DEMO_SERVICE_ACCOUNT,
    DEMO_SERVICE_ACCOUNT_ID,
    FROM_AZURE_ROLE_ARN,
    GCP_AZURE_PROVIDER,
    GCP_PROVIDER,
    DevStack,
)
from tests.conftest import WriteConfig
from tests.integration.azure.conftest import azure_section

pytestmark = pytest.mark.integration


def _gcp(stack: DevStack) -> dict[str, object]:
    return {"workload_identity_provider": GCP_PROVIDER, "service_account": DEMO_SERVICE_ACCOUNT,
            "sts_endpoint": stack.gcp_sts_url, "iam_credentials_endpoint": stack.gcp_iam_url,
            "lifetime": "10m"}


def _once(config: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(["once", "--config", str(config)])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_gcp_to_azure(stack: DevStack, write_config: WriteConfig, outdir: Path,
                      capsys: pytest.CaptureFixture[str]) -> None:
    """JWT-SVID -> GCP STS -> service account -> Google ID token -> Entra: the Entra
    token is the app's, exchanged for the service account's ID token; it expires with
    the shortest hop (the 10 min service account token, not Entra's 60-90 min)."""
    config = write_config(targets=[{"name": "g2z", "gcp": _gcp(stack),
                                    "chain": [{"azure": azure_section(stack)}]}])
    code, out = _once(config, capsys)
    assert code == 0, out
    doc = json.loads((outdir / "azure" / "g2z.json").read_text())
    issued = stack.azure.whoami(doc["access_token"])
    assert issued is not None
    assert (issued.tenant_id, issued.client_id) == (AZURE_TENANT_ID, AZURE_CLIENT_ID)
    assert issued.subject == DEMO_SERVICE_ACCOUNT_ID
    sa_token = next(t for t in stack.gcp.issued if t.principal.startswith("serviceAccount:"))
    assert doc["expires_on"] <= sa_token.expires_at + 1
    assert doc["expires_on"] < issued.expires_at - 1800


def test_gcp_to_azure_fails_at_the_entra_hop_without_its_trust(
        stack: DevStack, write_config: WriteConfig, outdir: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """The federated credential for Google's issuer removed: hop 3/3 (Entra) fails with
    AADSTS700211, and no azure file is written."""
    stack.azure.directory.remove_federated_credential(AZURE_TENANT_ID, AZURE_CLIENT_ID,
                                                      "from-gcp")
    config = write_config(targets=[{"name": "g2z", "gcp": _gcp(stack),
                                    "chain": [{"azure": azure_section(stack)}]}])
    code, out = _once(config, capsys)
    assert code == 1
    assert "hop 3/3 azure_entra" in out
    assert "AADSTS700211" in out
    assert not (outdir / "azure" / "g2z.json").exists()


def _aws(stack: DevStack, **extra: object) -> dict[str, object]:
    return {"role_arn": FROM_AZURE_ROLE_ARN, "region": "us-east-1",
            "sts_endpoint": stack.aws_sts_url, "audience": AZURE_APP_RESOURCE,
            "duration": "15m", **extra}


def _to_app(stack: DevStack) -> dict[str, object]:
    return azure_section(stack, scopes=[f"{AZURE_APP_RESOURCE}/.default"])


def test_azure_to_aws(stack: DevStack, write_config: WriteConfig, outdir: Path,
                      capsys: pytest.CaptureFixture[str]) -> None:
    """JWT-SVID -> Entra (a v2 token for the app's own API) -> AssumeRoleWithWebIdentity
    with that token (AWS trusts the tenant's v2 issuer); expiry: the earlier one."""
    config = write_config(targets=[{"name": "z2a", "azure": _to_app(stack),
                                    "chain": [{"aws": _aws(stack)}]}])
    code, out = _once(config, capsys)
    assert code == 0, out
    doc = json.loads((outdir / "aws" / "z2a.json").read_text())
    session = next(s for s in stack.aws.issued if s.access_key_id == doc["AccessKeyId"])
    assert session.role_arn == FROM_AZURE_ROLE_ARN
    assert session.subject == AZURE_APP_OBJECT_ID
    entra = stack.azure.issued[-1]
    expiry = datetime.strptime(doc["Expiration"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    assert expiry.timestamp() <= min(entra.expires_at, session.expiration.timestamp()) + 1


def test_azure_to_aws_fails_at_the_aws_hop_without_its_trust(
        stack: DevStack, write_config: WriteConfig, outdir: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """AWS's role trusting another subject: the AWS hop fails, named, nothing written."""
    stack.aws.add_role(FROM_AZURE_ROLE_ARN, provider_url=stack.azure.v2_issuer(AZURE_TENANT_ID),
                       aud=AZURE_APP_RESOURCE, sub="someone-else")
    config = write_config(targets=[{"name": "z2a", "azure": _to_app(stack),
                                    "chain": [{"aws": _aws(stack)}]}])
    code, out = _once(config, capsys)
    assert code == 1
    assert "hop 3/3 aws_web_identity" in out  # svid -> entra -> (its token) -> aws
    assert not (outdir / "aws" / "z2a.json").exists()


def test_azure_to_aws_audience_must_be_the_entra_resource(
        stack: DevStack, write_config: WriteConfig, capsys: pytest.CaptureFixture[str]) -> None:
    """`check` refuses an AWS hop whose audience is not the Azure hop's resource."""
    config = write_config(targets=[{"name": "z2a", "azure": azure_section(stack),
                                    "chain": [{"aws": _aws(stack)}]}])
    assert main(["check", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "targets[0]" in err
    assert "Entra token itself" in err


def _gcp_from_azure(stack: DevStack) -> dict[str, object]:
    return {"workload_identity_provider": GCP_AZURE_PROVIDER,
            "service_account": DEMO_SERVICE_ACCOUNT, "audience": AZURE_APP_RESOURCE,
            "sts_endpoint": stack.gcp_sts_url, "iam_credentials_endpoint": stack.gcp_iam_url,
            "lifetime": "10m"}


def test_azure_to_gcp(stack: DevStack, write_config: WriteConfig, outdir: Path,
                      capsys: pytest.CaptureFixture[str]) -> None:
    """JWT-SVID -> Entra (v2 token for the app) -> GCP STS on a pool trusting the
    tenant's issuer, audience the app ID URI -> the service account's token; expiry:
    the service account's 10 min, the earliest."""
    config = write_config(targets=[{"name": "z2g", "azure": _to_app(stack),
                                    "chain": [{"gcp": _gcp_from_azure(stack)}]}])
    code, out = _once(config, capsys)
    assert code == 0, out
    doc = json.loads((outdir / "gcp" / "z2g.json").read_text())
    owner = stack.gcp.whoami(doc["token"])
    assert owner is not None
    assert owner.principal == f"serviceAccount:{DEMO_SERVICE_ACCOUNT}"
    sts = next(r for r in stack.gcp.requests if r.path.endswith("/token"))
    assert sts.form["audience"] == GCP_AZURE_PROVIDER
    entra = stack.azure.issued[-1]
    expiry = datetime.strptime(doc["expiry"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    assert expiry.timestamp() <= min(entra.expires_at, owner.expires_at) + 1
    assert expiry.timestamp() < entra.expires_at - 1800


def test_azure_to_gcp_fails_at_the_gcp_hop_without_its_trust(
        stack: DevStack, write_config: WriteConfig, outdir: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """The pool's provider disabled: the GCP hop fails, named, nothing written."""
    stack.gcp.set_provider_enabled(GCP_AZURE_PROVIDER, False)
    config = write_config(targets=[{"name": "z2g", "azure": _to_app(stack),
                                    "chain": [{"gcp": _gcp_from_azure(stack)}]}])
    code, out = _once(config, capsys)
    assert code == 1
    assert "hop 3/3 gcp_sts" in out
    assert not (outdir / "gcp" / "z2g.json").exists()


def _aws_first(stack: DevStack) -> dict[str, object]:
    return {"role_arn": DEMO_ROLE_ARN, "region": "us-east-1",
            "sts_endpoint": stack.aws_sts_url, "duration": "15m"}


def test_aws_to_azure(stack: DevStack, write_config: WriteConfig, outdir: Path,
                      capsys: pytest.CaptureFixture[str]) -> None:
    """JWT-SVID -> AWS role session -> sts:GetWebIdentityToken for Entra's audience ->
    Entra: the app's token, for the role; expiry: the 15 min AWS session, the earliest."""
    config = write_config(targets=[{"name": "a2z", "aws": _aws_first(stack),
                                    "chain": [{"azure": azure_section(stack)}]}])
    code, out = _once(config, capsys)
    assert code == 0, out
    doc = json.loads((outdir / "azure" / "a2z.json").read_text())
    issued = stack.azure.whoami(doc["access_token"])
    assert issued is not None
    assert issued.subject == DEMO_ROLE_ARN
    web = [r for r in stack.aws.requests if r.action == "GetWebIdentityToken"]
    assert len(web) == 1
    assert web[0].params["Audience.member.1"] == "api://AzureADTokenExchange"
    assert web[0].params["DurationSeconds"] == "3600"  # not 5 min: it bounds the chain
    session = stack.aws.issued[-1]
    assert session.expiration.timestamp() - 1 <= doc["expires_on"] <= (
        session.expiration.timestamp() + 1)
    assert doc["expires_on"] < issued.expires_at - 1800


def test_aws_to_azure_fails_at_the_token_hop_when_federation_is_off(
        stack: DevStack, write_config: WriteConfig, outdir: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Outbound federation disabled for the account: hop 2/3 (GetWebIdentityToken)
    fails, named with AWS's code; nothing written."""
    stack.aws.outbound.enable("111122223333", enabled=False)
    config = write_config(targets=[{"name": "a2z", "aws": _aws_first(stack),
                                    "chain": [{"azure": azure_section(stack)}]}])
    code, out = _once(config, capsys)
    assert code == 1
    assert "hop 2/3 aws_web_token" in out
    assert "OutboundWebIdentityFederationDisabledException" in out
    assert not (outdir / "azure" / "a2z.json").exists()


def test_aws_to_azure_fails_at_the_entra_hop_without_its_trust(
        stack: DevStack, write_config: WriteConfig, capsys: pytest.CaptureFixture[str]) -> None:
    """Entra's credential for the AWS issuer removed: hop 3/3 fails with AADSTS700211."""
    stack.azure.directory.remove_federated_credential(AZURE_TENANT_ID, AZURE_CLIENT_ID,
                                                      "from-aws")
    config = write_config(targets=[{"name": "a2z", "aws": _aws_first(stack),
                                    "chain": [{"azure": azure_section(stack)}]}])
    code, out = _once(config, capsys)
    assert code == 1
    assert "hop 3/3 azure_entra" in out
    assert "AADSTS700211" in out
