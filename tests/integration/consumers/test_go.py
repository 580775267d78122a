"""Go: aws-sdk-go-v2 `config.LoadDefaultConfig` on each AWS output, and Google's Go
libraries (`golang.org/x/oauth2/google`, `cloud.google.com/go/compute/metadata`) on
the GCE metadata emulation and the external_account file."""

from __future__ import annotations

import pytest

from bridge.devstack.stack import DEMO_SERVICE_ACCOUNT
from tests.integration.consumers.conftest import (
    AWS_LIFETIME,
    AWS_TARGET,
    GCP_LIFETIME,
    PROJECT_ID,
    World,
    check_aws,
    check_gcp,
    consumer_env,
    go,
    parse_time,
)

pytestmark = pytest.mark.integration
GO_CONTAINER_WINDOW = 5 * 60.0  # config.resolveHTTPCredProvider: CredentialsCache ExpiryWindow


def _s(seconds: float) -> str:
    """A Go flag duration."""
    return f"{seconds:.0f}s"


def _shared_file_env(world: World) -> dict[str, str]:
    return {"AWS_SHARED_CREDENTIALS_FILE": str(world.credentials_file),
            "AWS_PROFILE": AWS_TARGET}


def test_shared_credentials_file_new_process_each_time(world: World) -> None:
    """Loaded afresh each round (a short-lived process per call), the shared file gives
    the key the bridge wrote, and the next bridge refresh shows up. The file has no
    expiry, so the SDK reports none (CanExpire false)."""
    run = go(world, "aws", consumer_env(world, _shared_file_env(world)),
             "-reload", "-want", "2", "-timeout", _s(AWS_LIFETIME * 2))
    check_aws(world, run, want=2, expiry=False)
    assert {e["can_expire"] for e in run.credentials} == {False}
    assert {e["source"] for e in run.credentials} == {"SharedConfigCredentials: "
                                                      f"{world.credentials_file}"}


def test_shared_credentials_file_long_lived_process_keeps_its_first_key(world: World) -> None:
    """One LoadDefaultConfig for the life of the process: the SDK never re-reads the
    file, so it keeps presenting its first key after the bridge replaced it and after
    that key's Expiration has passed (real STS would answer ExpiredToken; the lagging
    emulator still counts 15 minutes on its own clock). Documented SDK behaviour
    (static credentials): the README's advice holds for Go too."""
    before = len(world.poller.aws_held())
    run = go(world, "aws", consumer_env(world, _shared_file_env(world)),
             "-want", "2", "-interval", "2s", "-timeout", _s(AWS_LIFETIME * 1.5))
    assert run.code == 3, run.explain()  # timed out holding one key
    assert len(run.distinct) == 1, run.explain()
    held = world.poller.aws_held()
    assert len(held) > before + 1, "the bridge refreshed meanwhile"
    expired_at = held[run.distinct[0]].expires_at
    assert parse_time(run.credentials[-1]["t"]) > expired_at + 5, run.explain()


def test_credential_process(world: World) -> None:
    """credential_process = spiffe-bridge credential-process: the SDK caches until the
    reported Expiration (no window), then runs the helper again and gets the bridge's
    newer key."""
    config = world.credential_process_config(world.home / "go-process")
    run = go(world, "aws", consumer_env(world, {"AWS_CONFIG_FILE": str(config),
                                                "AWS_PROFILE": AWS_TARGET}),
             "-want", "2", "-timeout", _s(AWS_LIFETIME * 3))
    check_aws(world, run, want=2)
    assert {e["source"] for e in run.credentials} == {"ProcessProvider"}


def test_container_endpoint(world: World) -> None:
    """AWS_CONTAINER_CREDENTIALS_FULL_URI + AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE. The
    SDK's cache for this provider has a 5-minute ExpiryWindow: it reports Expires
    5 minutes early (so with these short sessions it re-fetches every round)."""
    env = {"AWS_CONTAINER_CREDENTIALS_FULL_URI": world.container_url,
           "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE": str(world.container_token_file)}
    run = go(world, "aws", consumer_env(world, env), "-want", "2",
             "-timeout", _s(AWS_LIFETIME * 2))
    check_aws(world, run, want=2, window=GO_CONTAINER_WINDOW)
    assert {e["source"] for e in run.credentials} == {"CredentialsEndpointProvider"}


def test_imds_v2(world: World) -> None:
    """AWS_EC2_METADATA_SERVICE_ENDPOINT: token PUT (the TTL echo the Go SDK needs),
    role listing, credentials; cached until Expiration, then the next session."""
    env = {"AWS_EC2_METADATA_SERVICE_ENDPOINT": world.imds_url,
           "AWS_EC2_METADATA_DISABLED": ""}
    run = go(world, "aws", consumer_env(world, env), "-want", "2",
             "-timeout", _s(AWS_LIFETIME * 3))
    check_aws(world, run, want=2)
    assert {e["source"] for e in run.credentials} == {"EC2RoleProvider"}


def _gce_env(world: World) -> dict[str, str]:
    return {"GCE_METADATA_HOST": world.gce_host, "GCE_METADATA_IP": world.gce_host}


def test_compute_metadata_package(world: World) -> None:
    """cloud.google.com/go/compute/metadata: OnGCE, Email, ProjectID and the token path
    (this package does not cache: each Get is a request)."""
    run = go(world, "gce-metadata", consumer_env(world, _gce_env(world)), "-want", "2",
             "-timeout", _s(GCP_LIFETIME * 2))
    info = run.of("metadata")[0]
    assert (info["on_gce"], info["email"], info["project_id"]) == (
        True, DEMO_SERVICE_ACCOUNT, PROJECT_ID), info
    check_gcp(world, run, want=2)


def test_oauth2_find_default_credentials_on_gce(world: World) -> None:
    """google.FindDefaultCredentials with GCE_METADATA_HOST: the compute token source
    (ReuseTokenSourceWithExpiry, 225 s early expiry, so these 30-second tokens are
    re-fetched every round and each bridge refresh reaches it)."""
    run = go(world, "gcp-default", consumer_env(world, _gce_env(world)), "-want", "2",
             "-timeout", _s(GCP_LIFETIME * 2))
    check_gcp(world, run, want=2)
    assert {e["project_id"] for e in run.credentials} == {PROJECT_ID}


def _sdk_tokens(world: World) -> dict[str, float]:
    """Tokens the Google emulator issued to the SDK's own exchange (external_account):
    the service account's, not held by the bridge."""
    return {fp: t.expires_at for fp, t in world.google_issued().items()
            if t.service_account == DEMO_SERVICE_ACCOUNT}


def test_oauth2_credentials_from_json_external_account(world: World) -> None:
    """google.CredentialsFromJSON on gcp/<t>.external_account.json: the SDK reads
    jwt/<t>.jwt and does STS + impersonation itself; it caches the token until 10 s
    before expiry, then exchanges again."""
    run = go(world, "gcp-json", consumer_env(world, {}), "-file",
             str(world.external_account_file), "-want", "2", "-timeout", _s(GCP_LIFETIME * 3))
    issued = _sdk_tokens(world)
    check_gcp(world, run, want=2, held=issued)
    assert not set(run.distinct) & set(world.poller.gcp_held()), "the SDK exchanged itself"
    first = parse_time(run.credentials[0]["expires"])
    assert first - parse_time(run.credentials[0]["t"]) <= GCP_LIFETIME + 2


def test_oauth2_application_default_credentials_file(world: World) -> None:
    """GOOGLE_APPLICATION_CREDENTIALS naming the external_account file."""
    env = {"GOOGLE_APPLICATION_CREDENTIALS": str(world.external_account_file)}
    run = go(world, "gcp-default", consumer_env(world, env), "-want", "1", "-timeout", "20s")
    check_gcp(world, run, want=1, held=_sdk_tokens(world))


def test_oauth2_token_json_from_the_token_file(world: World) -> None:
    """gcp/<t>.json unmarshalled into x/oauth2's own `oauth2.Token` (access_token,
    token_type, expiry), read afresh each round: Valid(), the bridge's token and expiry,
    accepted by the emulator, and the next refresh shows up."""
    run = go(world, "gcp-token-file", consumer_env(world, {}), "-file",
             str(world.token_json_file), "-want", "2", "-timeout", _s(GCP_LIFETIME * 2))
    check_gcp(world, run, want=2, tolerance=0.0)
    assert {e["token_type"] for e in run.credentials} == {"Bearer"}
