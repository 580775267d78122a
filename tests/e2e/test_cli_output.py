"""What the command line prints is redacted and bounded (issue 13, item 7): a token
service that echoes the request's JWT-SVID in a kilobytes-long error must not get it
printed by `once`'s summary or by `run`'s last line (`exit_on_permanent_failure`)."""

from __future__ import annotations

import subprocess

import pytest
import yaml

from bridge.cli.output import LINE_LIMIT
from bridge.devstack import ECHO_TOKEN, DevStack, HttpFailure
from tests.conftest import WriteConfig
from tests.support.configs import aws_target, gcp_target
from tests.support.process import bridge_cli

pytestmark = pytest.mark.integration

PADDING = "z" * 5000  # a 5 KB description, as a misbehaving service sent


def _assert_safe(proc: subprocess.CompletedProcess[str]) -> None:
    text = proc.stdout + proc.stderr
    assert "eyJ" not in text, text  # no JWT, not even a cut one (every JWT starts so)
    assert "Traceback" not in text, text
    longest = max((len(line) for line in text.splitlines()), default=0)
    assert longest <= LINE_LIMIT, longest
    assert PADDING not in text


def test_once_summary_masks_an_echoed_svid_and_bounds_the_line(
        stack: DevStack, write_config: WriteConfig) -> None:
    """AWS STS refuses with AccessDenied whose message quotes the WebIdentityToken, GCP
    STS with an error_description that does: the summary says FAILED and why, no token."""
    stack.aws.faults.fail_next("AssumeRoleWithWebIdentity", HttpFailure(
        403, "AccessDenied", f"{ECHO_TOKEN} is not allowed {PADDING}"), times=20)
    stack.gcp.faults.fail_next("token", HttpFailure(
        400, "invalid_request", f"bad subject_token {ECHO_TOKEN} {PADDING}"), times=20)
    config = write_config(targets=[aws_target(stack, "demo"), gcp_target(stack, "demo-gcp")])
    proc = bridge_cli("once", "--config", str(config), timeout=90)
    assert proc.returncode == 1, proc.stderr
    assert "FAILED" in proc.stdout
    assert "AccessDenied" in proc.stdout
    assert stack.aws.faults.calls("AssumeRoleWithWebIdentity") >= 1
    assert stack.gcp.faults.calls("token") >= 1
    _assert_safe(proc)


def test_run_last_line_on_a_permanent_failure_masks_an_echoed_svid(
        stack: DevStack, write_config: WriteConfig) -> None:
    """`exit_on_permanent_failure`: exit 1 with one line naming the failure, no token."""
    stack.aws.faults.fail_next("AssumeRoleWithWebIdentity", HttpFailure(
        403, "AccessDenied", f"token {ECHO_TOKEN} refused {PADDING}"), times=20)
    config = write_config()
    doc = yaml.safe_load(config.read_text())
    doc["refresh"] = {"exit_on_permanent_failure": True}
    config.write_text(yaml.safe_dump(doc))
    proc = bridge_cli("run", "--config", str(config), timeout=60)
    assert proc.returncode == 1, proc.stderr
    assert "exit_on_permanent_failure" in proc.stderr
    _assert_safe(proc)
