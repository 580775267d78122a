"""`spiffe-bridge once` end to end: dev Workload API -> dev STS -> files -> boto3."""

from __future__ import annotations

import configparser
import json
import sys
from pathlib import Path

import boto3
import botocore.session
import pytest

from bridge.cli import main
from bridge.devstack import DEMO_ROLE_ARN, DevStack
from tests.conftest import WriteConfig
from tests.support.process import bridge_cli

pytestmark = pytest.mark.integration


def _profile_credentials(outdir: Path, profile: str, env: dict[str, str] | None = None
                         ) -> tuple[str, str, str]:
    """What boto3 itself loads for `profile` from the bridge's credentials file."""
    session = boto3.session.Session(profile_name=profile)
    creds = session.get_credentials()
    assert creds is not None
    frozen = creds.get_frozen_credentials()
    return frozen.access_key, frozen.secret_key, frozen.token


def test_once_writes_credentials_boto3_loads(stack: DevStack, write_config: WriteConfig,
                                             outdir: Path, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    """boto3 with AWS_SHARED_CREDENTIALS_FILE loads exactly what STS issued."""
    config = write_config()
    assert main(["once", "--config", str(config)]) == 0
    assert "demo" in capsys.readouterr().out
    issued = stack.aws.issued
    assert len(issued) == 1
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(outdir / "aws" / "credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", "/dev/null")
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                "AWS_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    key, secret, token = _profile_credentials(outdir, "demo")
    got = issued[0]
    assert (key, secret, token) == (got.access_key_id, got.secret_access_key,
                                    got.session_token)


def test_requests_carry_exactly_the_sts_fields(stack: DevStack,
                                               write_config: WriteConfig) -> None:
    """The wire request is an unsigned AssumeRoleWithWebIdentity with a derived session name."""
    assert main(["once", "--config", str(write_config())]) == 0
    (request,) = stack.aws.requests
    assert set(request.params) == {"Action", "Version", "RoleArn", "RoleSessionName",
                                   "WebIdentityToken", "DurationSeconds"}
    assert request.params["RoleArn"] == DEMO_ROLE_ARN
    assert request.params["DurationSeconds"] == "3600"
    assert request.params["RoleSessionName"].startswith("example.org.demo-")
    assert "authorization" not in {k.lower() for k in request.headers}


def test_credential_process_profile_works_through_botocore(
        stack: DevStack, write_config: WriteConfig, outdir: Path, short_dir: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """An AWS profile `credential_process = spiffe-bridge credential-process ...` works."""
    config = write_config()
    assert main(["once", "--config", str(config)]) == 0
    aws_config = short_dir / "aws-config"
    aws_config.write_text(
        "[profile bridged]\n"
        f"credential_process = {sys.executable} -m bridge credential-process "
        f"--target demo --config {config}\n")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(aws_config))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    session = botocore.session.Session(profile="bridged")
    creds = session.get_credentials()
    assert creds is not None
    frozen = creds.get_frozen_credentials()
    got = stack.aws.issued[0]
    assert frozen.access_key == got.access_key_id
    assert frozen.token == got.session_token
    doc = json.loads((outdir / "aws" / "demo.json").read_text())
    # botocore saw the Expiration, so these are refreshable credentials
    assert creds.refresh_needed() is False
    assert doc["Expiration"].endswith("Z")


def test_credential_process_for_an_unknown_target_fails_cleanly(
        write_config: WriteConfig) -> None:
    """A non-zero exit and one clear line, which botocore shows to the user."""
    config = write_config()
    assert main(["once", "--config", str(config)]) == 0
    proc = bridge_cli("credential-process", "--target", "nope", "--config", str(config))
    assert proc.returncode == 1
    assert "'nope'" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stdout == ""


def test_two_targets_get_two_profiles(stack: DevStack, write_config: WriteConfig,
                                      outdir: Path) -> None:
    """One profile per AWS target, each with its own credentials and JSON file."""
    stack.aws.add_role("arn:aws:iam::111122223333:role/second", provider_url=stack.issuer,
                       aud="sts.amazonaws.com", sub="spiffe://example.org/*",
                       max_session_duration=7200)
    base = {"region": "us-east-1", "sts_endpoint": stack.aws_sts_url}
    config = write_config(targets=[
        {"name": "first", "aws": {**base, "role_arn": DEMO_ROLE_ARN}},
        {"name": "second", "jwt_file": True,
         "aws": {**base, "role_arn": "arn:aws:iam::111122223333:role/second",
                 "duration": "2h"}},
    ])
    assert main(["once", "--config", str(config)]) == 0
    ini = configparser.ConfigParser()
    ini.read(outdir / "aws" / "credentials")
    assert sorted(ini.sections()) == ["first", "second"]
    assert ini["first"]["aws_access_key_id"] != ini["second"]["aws_access_key_id"]
    assert (outdir / "aws" / "first.json").is_file()
    jwt_file = outdir / "jwt" / "second.jwt"
    assert jwt_file.read_bytes().count(b".") == 2
    assert not jwt_file.read_bytes().endswith(b"\n")
    assert not (outdir / "jwt" / "first.jwt").exists()
    durations = sorted(r.params["DurationSeconds"] for r in stack.aws.requests)
    assert durations == ["3600", "7200"]


@pytest.mark.parametrize(
    ("edit", "code", "reason"),
    [
        ({"audience": "wrong-audience"}, "InvalidIdentityToken", "invalid_token"),
        ({"aws": "role:untrusted-sub"}, "AccessDenied", "access_denied"),
        ({"aws": "role:missing"}, "AccessDenied", "access_denied"),
        ({"aws": "duration:13h"}, "ValidationError", "invalid_request"),
    ],
    ids=["wrong-audience", "wrong-sub", "unknown-role", "duration-above-role-max"],
)
def test_sts_refusals_are_reported_clearly(stack: DevStack, write_config: WriteConfig,
                                           outdir: Path, capsys: pytest.CaptureFixture[str],
                                           edit: dict[str, str], code: str,
                                           reason: str) -> None:
    """Each refusal: exit 1, the summary names the hop and STS's code, no file, no crash."""
    target: dict[str, object] = {}
    aws = {"region": "us-east-1", "sts_endpoint": stack.aws_sts_url, "role_arn": DEMO_ROLE_ARN}
    if edit.get("audience"):
        target["audience"] = edit["audience"]
    elif edit["aws"] == "role:untrusted-sub":
        stack.aws.add_role("arn:aws:iam::111122223333:role/other", provider_url=stack.issuer,
                           aud="sts.amazonaws.com", sub="spiffe://example.org/someone-else")
        aws["role_arn"] = "arn:aws:iam::111122223333:role/other"
    elif edit["aws"] == "role:missing":
        aws["role_arn"] = "arn:aws:iam::111122223333:role/absent"
    elif edit["aws"] == "duration:13h":
        stack.aws.add_role("arn:aws:iam::111122223333:role/short", provider_url=stack.issuer,
                           aud="sts.amazonaws.com", sub="spiffe://example.org/*",
                           max_session_duration=3600)
        aws["role_arn"] = "arn:aws:iam::111122223333:role/short"
        aws["duration"] = "2h"
    config = write_config(aws=aws, **target)
    assert main(["once", "--config", str(config)]) == 1
    out = capsys.readouterr()
    assert "FAILED" in out.out
    assert f"aws_web_identity: {code}" in out.out
    assert "Traceback" not in out.out + out.err
    assert not (outdir / "aws" / "demo.json").exists()
    assert stack.aws.requests, "the exchange was attempted"
    del reason


def test_a_restart_keeps_valid_credentials_while_refresh_fails(
        stack: DevStack, write_config: WriteConfig, outdir: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Still-valid credentials from the previous run survive a restart whose refresh fails."""
    from bridge.devstack import HttpFailure

    config = write_config()
    assert main(["once", "--config", str(config)]) == 0
    before = (outdir / "aws" / "demo.json").read_bytes()
    ini_before = (outdir / "aws" / "credentials").read_bytes()
    stack.aws.faults.fail_next("AssumeRoleWithWebIdentity",
                               HttpFailure(503, "ServiceUnavailable"), times=10)
    assert main(["once", "--config", str(config)]) == 1
    assert "FAILED" in capsys.readouterr().out
    assert (outdir / "aws" / "demo.json").read_bytes() == before
    assert (outdir / "aws" / "credentials").read_bytes() == ini_before


def test_expired_leftovers_are_not_recovered(stack: DevStack, write_config: WriteConfig,
                                             outdir: Path) -> None:
    """A credentials file whose Expiration passed is removed, never served again."""
    from bridge.devstack import HttpFailure

    config = write_config()
    assert main(["once", "--config", str(config)]) == 0
    doc = json.loads((outdir / "aws" / "demo.json").read_text())
    doc["Expiration"] = "2020-01-01T00:00:00Z"
    (outdir / "aws" / "demo.json").write_text(json.dumps(doc))
    stack.aws.faults.fail_next("AssumeRoleWithWebIdentity",
                               HttpFailure(503, "ServiceUnavailable"), times=10)
    assert main(["once", "--config", str(config)]) == 1
    assert not (outdir / "aws" / "demo.json").exists()


def test_no_secret_reaches_the_logs_at_debug(stack: DevStack, write_config: WriteConfig,
                                             caplog: pytest.LogCaptureFixture) -> None:
    """Every log record of a run at DEBUG is free of tokens and keys (raw, before redaction)."""
    caplog.set_level("DEBUG")
    config = write_config(jwt_file=True)
    assert main(["once", "--log-level", "DEBUG", "--config", str(config)]) == 0
    issued = stack.aws.issued[0]
    secrets = [issued.access_key_id, issued.secret_access_key, issued.session_token]
    secrets += [r.params["WebIdentityToken"] for r in stack.aws.requests]
    text = "\n".join(r.getMessage() + str(getattr(r, "fields", "")) for r in caplog.records)
    assert caplog.records, "the run logged something"
    for secret in secrets:
        assert secret not in text
    assert "eyJ" not in text


def test_moto_as_an_independent_sts(write_config: WriteConfig, outdir: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The same run against moto's STS server succeeds, and moto accepts the credentials."""
    moto_server = pytest.importorskip("moto.server")
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    try:
        host, port = server.get_host_and_port()
        url = f"http://{host}:{port}"
        config = write_config(aws={"role_arn": DEMO_ROLE_ARN, "region": "us-east-1",
                                   "sts_endpoint": url})
        assert main(["once", "--config", str(config)]) == 0
        monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(outdir / "aws" / "credentials"))
        monkeypatch.setenv("AWS_CONFIG_FILE", "/dev/null")
        sts = boto3.session.Session(profile_name="demo").client(
            "sts", region_name="us-east-1", endpoint_url=url)
        identity = sts.get_caller_identity()
        assert ":assumed-role/demo/" in identity["Arn"]
    finally:
        server.stop()


def test_check_accepts_the_dev_config(write_config: WriteConfig) -> None:
    """The config the tests use is itself valid per `check`."""
    assert main(["check", "--config", str(write_config())]) == 0
