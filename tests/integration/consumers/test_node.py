"""Node: the AWS SDK for JavaScript v3 (`@aws-sdk/credential-providers` with
`@aws-sdk/client-sts`) on each AWS output, and google-auth-library on the GCE metadata
emulation and the external_account file."""

from __future__ import annotations

import http.client
from collections.abc import Callable

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
    node,
    parse_time,
)

pytestmark = pytest.mark.integration


def _t(seconds: float) -> str:
    return f"{seconds:.0f}"


def _container_env(world: World) -> dict[str, str]:
    return {"AWS_CONTAINER_CREDENTIALS_FULL_URI": world.container_url,
            "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE": str(world.container_token_file)}


def _process_env(world: World) -> dict[str, str]:
    config = world.credential_process_config(world.home / "node-process")
    return {"AWS_CONFIG_FILE": str(config), "AWS_PROFILE": AWS_TARGET}


def _shared_file_env(world: World) -> dict[str, str]:
    return {"AWS_SHARED_CREDENTIALS_FILE": str(world.credentials_file),
            "AWS_PROFILE": AWS_TARGET}


# The client memoizes its provider and calls it again when under 5 minutes are left
# (core's isIdentityExpired), so with these short sessions every round asks the source
# again, and each bridge refresh shows up within a quarter of a session.


@pytest.mark.parametrize(("mode", "env"), [
    ("aws-chain", _container_env), ("aws-http", _container_env),
    ("aws-chain", _process_env), ("aws-process", _process_env),
], ids=["default-chain-container-endpoint", "from-http", "default-chain-credential-process",
        "from-process"])
def test_a_refreshing_provider_follows_the_bridge(
        world: World, mode: str, env: Callable[[World], dict[str, str]]) -> None:
    """Two credentials in a row, the second after a bridge refresh."""
    run = node(world, mode, consumer_env(world, env(world)),
               "--want", "2", "--timeout", _t(AWS_LIFETIME * 2))
    check_aws(world, run, want=2)


def test_from_container_metadata_with_token_value(world: World) -> None:
    """The older fromContainerMetadata reads AWS_CONTAINER_AUTHORIZATION_TOKEN only (no
    _FILE variant), so it gets the token's value; with the file alone it sends no
    Authorization and the bridge answers 401 (see the next test)."""
    env = {"AWS_CONTAINER_CREDENTIALS_FULL_URI": world.container_url,
           "AWS_CONTAINER_AUTHORIZATION_TOKEN": world.container_token_file.read_text()}
    run = node(world, "aws-container", consumer_env(world, env), "--want", "2",
               "--timeout", _t(AWS_LIFETIME * 2))
    check_aws(world, run, want=2)


def test_from_container_metadata_ignores_the_token_file(world: World) -> None:
    run = node(world, "aws-container", consumer_env(world, _container_env(world)),
               "--timeout", "3")
    assert run.code == 3, run.explain()
    assert not run.credentials, run.explain()
    assert run.of("error")[0]["error"] == (
        "ProviderError: Error response received from instance metadata service")


def test_from_ini_shared_credentials_file(world: World) -> None:
    """fromIni on the shared file: static credentials (no expiry in the file), read once;
    a new process gets the current key."""
    run = node(world, "aws-ini", consumer_env(world, _shared_file_env(world)),
               "--want", "1", "--timeout", "10")
    check_aws(world, run, want=1, expiry=False)
    assert {e["expires"] for e in run.credentials} == {None}


def test_default_chain_shared_file_long_lived_keeps_its_first_key(world: World) -> None:
    """fromNodeProviderChain memoizes credentials without an expiration forever: a
    long-lived process keeps the first key past its real expiry."""
    run = node(world, "aws-chain", consumer_env(world, _shared_file_env(world)),
               "--want", "2", "--interval", "2000", "--timeout", _t(AWS_LIFETIME * 1.5))
    assert run.code == 3, run.explain()
    assert len(run.distinct) == 1, run.explain()
    expired_at = world.poller.aws_held()[run.distinct[0]].expires_at
    assert parse_time(run.credentials[-1]["t"]) > expired_at + 5, run.explain()


def test_from_instance_metadata_imds_v2(world: World) -> None:
    env = {"AWS_EC2_METADATA_SERVICE_ENDPOINT": world.imds_url, "AWS_EC2_METADATA_DISABLED": ""}
    run = node(world, "aws-imds", consumer_env(world, env), "--want", "2",
               "--timeout", _t(AWS_LIFETIME * 2))
    check_aws(world, run, want=2)


def test_default_chain_imds_v2(world: World) -> None:
    env = {"AWS_EC2_METADATA_SERVICE_ENDPOINT": world.imds_url, "AWS_EC2_METADATA_DISABLED": ""}
    run = node(world, "aws-chain", consumer_env(world, env), "--want", "2",
               "--timeout", _t(AWS_LIFETIME * 2))
    check_aws(world, run, want=2)


# -- Google ----------------------------------------------------------------------------


def _gce_env(world: World) -> dict[str, str]:
    return {"GCE_METADATA_HOST": world.gce_host, "GCE_METADATA_IP": world.gce_host}


def test_google_auth_get_client_on_gce_metadata(world: World) -> None:
    """GoogleAuth.getClient() with GCE_METADATA_HOST/GCE_METADATA_IP: google-auth-library
    first asks gcp-metadata's isAvailable(), which GETs /computeMetadata/v1/instance
    (no trailing slash) and takes a 404 as "not on GCE" ("Could not load the default
    credentials"): the emulation answers that directory as the real server does."""
    run = node(world, "gcp-default", consumer_env(world, _gce_env(world)), "--want", "2",
               "--timeout", _t(GCP_LIFETIME * 2))
    assert run.code == 0, run.explain()
    client = run.of("client")[0]
    assert (client["client"], client.get("project_id"), client.get("email")) == (
        "Compute", PROJECT_ID, DEMO_SERVICE_ACCOUNT), client
    check_gcp(world, run, want=2)


def test_google_auth_on_gce_metadata_with_detection_skipped(world: World) -> None:
    """The same client with gcp-metadata's documented METADATA_SERVER_DETECTION=
    assume-present, which skips the probe above: everything after detection (token,
    project ID, email) works against the bridge too."""
    env = {**_gce_env(world), "METADATA_SERVER_DETECTION": "assume-present"}
    run = node(world, "gcp-default", consumer_env(world, env), "--want", "2",
               "--timeout", _t(GCP_LIFETIME * 2))
    assert run.code == 0, run.explain()
    client = run.of("client")[0]
    assert (client["client"], client.get("project_id"), client.get("email")) == (
        "Compute", PROJECT_ID, DEMO_SERVICE_ACCOUNT), client
    check_gcp(world, run, want=2)


@pytest.mark.parametrize(("path", "flavor"), [
    ("/", False),                     # Go's metadata.OnGCE pings the root bare
    ("/computeMetadata", True),
    ("/computeMetadata/", True),
    ("/computeMetadata/v1", True),
    ("/computeMetadata/v1/", True),
    ("/computeMetadata/v1/instance", True),  # gcp-metadata isAvailable(): 'instance'
    ("/computeMetadata/v1/instance/", True),
    ("/computeMetadata/v1/project", True),
    ("/computeMetadata/v1/project/", True),
    ("/computeMetadata/v1/instance/service-accounts", True),
])
def test_gce_directory_paths_answer(world: World, path: str, flavor: bool) -> None:
    """The metadata server answers its directory paths with and without the trailing
    slash (a client library probes `instance`), and the root without the flavor
    header, each with the reply's `Metadata-Flavor: Google`."""
    conn = http.client.HTTPConnection("127.0.0.1", world.gce_port, timeout=5)
    try:
        conn.request("GET", path, headers={"Metadata-Flavor": "Google"} if flavor else {})
        response = conn.getresponse()
        body = response.read()
    finally:
        conn.close()
    assert response.status == 200, f"GET {path} -> {response.status} {body[:80]!r}"
    assert response.getheader("Metadata-Flavor") == "Google"


def _sdk_tokens(world: World) -> dict[str, float]:
    return {fp: t.expires_at for fp, t in world.google_issued().items()
            if t.service_account == DEMO_SERVICE_ACCOUNT}


# google-auth-library's project discovery for an external_account client (no project in
# the file) falls through to the GCE metadata server at 169.254.169.254 and then to Cloud
# Resource Manager, and getClient() through GOOGLE_APPLICATION_CREDENTIALS fails when
# those cannot be reached: GOOGLE_CLOUD_PROJECT, which it reads first, keeps it local.
PROJECT_ENV = {"GOOGLE_CLOUD_PROJECT": PROJECT_ID}


def test_google_auth_external_account_file(world: World) -> None:
    """GoogleAuth({keyFilename}) on gcp/<t>.external_account.json: an
    IdentityPoolClient reading jwt/<t>.jwt and impersonating; its 5-minute eager
    refresh makes it exchange again every round with these 30-second tokens."""
    run = node(world, "gcp-json", consumer_env(world, PROJECT_ENV), "--file",
               str(world.external_account_file), "--want", "2", "--timeout", _t(GCP_LIFETIME * 2))
    check_gcp(world, run, want=2, held=_sdk_tokens(world))
    assert run.of("client")[0]["client"] == "IdentityPoolClient"


def test_google_auth_application_default_credentials_file(world: World) -> None:
    env = {"GOOGLE_APPLICATION_CREDENTIALS": str(world.external_account_file), **PROJECT_ENV}
    run = node(world, "gcp-default", consumer_env(world, env), "--want", "1", "--timeout", "20")
    check_gcp(world, run, want=1, held=_sdk_tokens(world))


def test_oauth2_client_set_credentials_from_the_token_file(world: World) -> None:
    """gcp/<t>.json passed as is to google-auth-library's OAuth2Client.setCredentials
    (its `access_token`): the bridge's token, accepted by the emulator; read afresh each
    round, the next refresh shows up. (That type's expiry is `expiry_date` in ms, which
    the file does not carry: the client never refreshes by itself.)"""
    run = node(world, "gcp-token-file", consumer_env(world, {}), "--file",
               str(world.token_json_file), "--want", "2", "--timeout", _t(GCP_LIFETIME * 2))
    check_gcp(world, run, want=2, expiry=False)
