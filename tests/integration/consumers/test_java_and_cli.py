"""Java: the AWS SDK for Java v2 (`DefaultCredentialsProvider`, and the profile's
credential_process). The `aws` CLI (awscli from PyPI, in its own venv) with a
credential_process profile."""

from __future__ import annotations

import json
import re
import time

import pytest

from tests.integration.consumers.conftest import (
    ASSUMED,
    AWS_CLI,
    AWS_LIFETIME,
    AWS_TARGET,
    World,
    check_aws,
    consumer_env,
    java,
    need,
    run_consumer,
    sha,
)

pytestmark = pytest.mark.integration
_CREDENTIAL = re.compile(r"Credential=(?P<key>[A-Z0-9]+)/")


def test_java_default_chain_container_endpoint(world: World) -> None:
    """DefaultCredentialsProvider -> ContainerCredentialsProvider with the FULL_URI and
    the token file; it caches until a minute before expiry (stale time), so with these
    short sessions it re-fetches each round."""
    env = {"AWS_CONTAINER_CREDENTIALS_FULL_URI": world.container_url,
           "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE": str(world.container_token_file)}
    run = java(world, "default", consumer_env(world, env), want=2, timeout=int(AWS_LIFETIME * 2))
    check_aws(world, run, want=2)


def test_java_default_chain_credential_process(world: World) -> None:
    """DefaultCredentialsProvider -> ProfileCredentialsProvider -> ProcessCredentialsProvider
    (AWS_CONFIG_FILE + AWS_PROFILE)."""
    config = world.credential_process_config(world.home / "java-process")
    env = {"AWS_CONFIG_FILE": str(config), "AWS_PROFILE": AWS_TARGET}
    run = java(world, "default", consumer_env(world, env), want=2, timeout=int(AWS_LIFETIME * 2))
    check_aws(world, run, want=2)


def test_java_profile_credentials_provider_process(world: World) -> None:
    """ProfileCredentialsProvider on its own (AWS_CONFIG_FILE + AWS_PROFILE), the
    profile's credential_process running spiffe-bridge."""
    config = world.credential_process_config(world.home / "java-profile")
    env = {"AWS_CONFIG_FILE": str(config), "AWS_PROFILE": AWS_TARGET}
    run = java(world, "profile", consumer_env(world, env), want=2, timeout=int(AWS_LIFETIME * 2))
    check_aws(world, run, want=2)


def _cli_call(world: World, env: dict[str, str]) -> tuple[str, str]:
    """`aws sts get-caller-identity` once (a new process, as a CLI user runs it);
    returns the ARN it printed and the fingerprint of the key that signed the request,
    taken from the STS emulator's record of it (the CLI never shows secrets)."""
    aws = need(AWS_CLI, "the aws CLI")
    before = len(world.stack.aws.requests)
    run = run_consumer(world, [str(aws), "sts", "get-caller-identity", "--endpoint-url",
                               world.sts_url, "--region", "us-east-1", "--output", "json"], env)
    assert run.code == 0, run.stderr[-2000:]
    arn = str(json.loads(run.stdout)["Arn"])
    calls = [r for r in world.stack.aws.requests[before:] if r.action == "GetCallerIdentity"]
    assert len(calls) == 1
    headers = {k.lower(): v for k, v in calls[0].headers.items()}
    key = _CREDENTIAL.search(headers["authorization"])
    assert key is not None
    return arn, sha(key.group("key") + headers["x-amz-security-token"])


def test_aws_cli_credential_process_across_a_refresh(world: World) -> None:
    """credential_process = <venv>/bin/spiffe-bridge credential-process --target T --config
    F: each CLI run signs with the key the bridge holds at that moment, and a run after
    the bridge's next refresh signs with the new one."""
    config = world.credential_process_config(world.home / "cli-process")
    env = consumer_env(world, {"AWS_CONFIG_FILE": str(config), "AWS_PROFILE": AWS_TARGET})
    arn, first = _cli_call(world, env)
    assert arn.startswith(ASSUMED)
    held = world.poller.held_eventually("aws", [first])
    assert first in held
    world.poller.wait_new("aws", len(held), timeout=AWS_LIFETIME)
    time.sleep(0.2)
    arn, second = _cli_call(world, env)
    assert arn.startswith(ASSUMED)
    assert second in world.poller.held_eventually("aws", [second])
    assert second != first
