"""IMDSv2 emulation: token PUT, token-gated GETs, the credentials document; botocore's
`InstanceMetadataFetcher` is the client where one is involved."""

from __future__ import annotations

import json
from collections.abc import Iterator

import botocore.utils
import pytest
from prometheus_client import CollectorRegistry

from bridge.clouds.aws import AwsHopConfig
from bridge.clouds.aws.imds import ImdsConfig, ImdsServer, SessionTokens
from bridge.config import TargetConfig
from bridge.metrics import Metrics
from bridge.model import Credential, utc_iso
from bridge.store import CredentialStore
from tests.support.local_http import call, count
from tests.support.values import aws_credential

NOW = 1_900_000_000.0
TTL = "X-aws-ec2-metadata-token-ttl-seconds"
CREDS = "/latest/meta-data/iam/security-credentials/"


class Clocks:
    def __init__(self) -> None:
        self.wall = NOW
        self.mono = 1000.0

    def now(self) -> float:
        return self.wall

    def monotonic(self) -> float:
        return self.mono


@pytest.fixture
def clocks() -> Clocks:
    return Clocks()


@pytest.fixture
def store() -> CredentialStore:
    return CredentialStore(["web"])


@pytest.fixture
def metrics() -> Metrics:
    return Metrics(CollectorRegistry())


@pytest.fixture
def server(store: CredentialStore, clocks: Clocks, metrics: Metrics) -> Iterator[ImdsServer]:
    target = TargetConfig(name="web", audience="sts.amazonaws.com", serve=("imds",),
                          hops=(AwsHopConfig(role_arn="arn:aws:iam::111122223333:role/web",
                                             region="us-east-1"),))
    s = ImdsServer(ImdsConfig("127.0.0.1:0"), target, store=store, now=clocks.now,
                   monotonic=clocks.monotonic, metrics=metrics)
    s.start()
    yield s
    s.stop()


def deliver(store: CredentialStore, *, lifetime: float = 3600.0) -> Credential:
    credential = aws_credential("web", now=NOW, lifetime=lifetime)
    store.succeeded("web", credential, NOW)
    return credential


def session_token(server: ImdsServer, ttl: str = "21600") -> str:
    status, headers, body = call(server.port, "PUT", "/latest/api/token", headers={TTL: ttl})
    assert status == 200
    assert headers[TTL] == ttl  # echoed: the Go v2 SDK fails without it
    return body.decode()


def test_token_put_echoes_the_ttl(server: ImdsServer) -> None:
    for ttl in ("1", "300", "21600"):
        assert len(session_token(server, ttl)) == 64


@pytest.mark.parametrize("ttl", [None, "0", "21601", "-5", "1.5", "abc", "", "\u00b2"])
def test_token_put_with_a_bad_ttl_is_400(server: ImdsServer, ttl: str | None) -> None:
    headers = {} if ttl is None else {TTL: ttl}
    assert call(server.port, "PUT", "/latest/api/token", headers=headers)[0] == 400


def test_token_put_through_a_proxy_is_refused(server: ImdsServer) -> None:
    status, headers, body = call(server.port, "PUT", "/latest/api/token",
                                 headers={TTL: "21600", "X-Forwarded-For": "10.1.2.3"})
    assert status == 403
    assert TTL not in headers
    assert len(body) < 64


@pytest.mark.parametrize("token", [None, "", "x" * 64, "AQAEA" * 12])
def test_gets_without_a_valid_token_are_401(server: ImdsServer, store: CredentialStore,
                                            metrics: Metrics, token: str | None) -> None:
    """IMDSv1 is off: no token, garbage, or a token of the right length but not ours."""
    credential = deliver(store)
    headers = {} if token is None else {"X-aws-ec2-metadata-token": token}
    for path in (CREDS, CREDS + "web"):
        status, _, body = call(server.port, path=path, headers=headers)
        assert status == 401
        assert not any(s.encode() in body for s in credential.secrets())
    assert count(metrics, "spiffe_bridge_metadata_refusals_total", endpoint="imds",
                 reason="token") == 2


def test_tokens_expire_after_their_ttl(server: ImdsServer, clocks: Clocks) -> None:
    token = session_token(server, "60")
    auth = {"X-aws-ec2-metadata-token": token}
    assert call(server.port, path=CREDS, headers=auth)[0] == 200
    clocks.mono += 59.9
    assert call(server.port, path=CREDS, headers=auth)[0] == 200
    clocks.mono += 0.2
    assert call(server.port, path=CREDS, headers=auth)[0] == 401


def test_tampered_and_foreign_tokens_are_refused() -> None:
    mono = [0.0]
    tokens = SessionTokens(lambda: mono[0])
    token = tokens.issue(100)
    assert tokens.valid(token)
    flipped = token[:10] + ("A" if token[10] != "A" else "B") + token[11:]
    assert not tokens.valid(flipped)
    assert not SessionTokens(lambda: mono[0]).valid(token)  # another process's key
    assert not tokens.valid(token[:-1] + "é")
    assert tokens.issue(100) != token  # a nonce in every token


def test_role_listing_and_credentials_document(server: ImdsServer,
                                               store: CredentialStore) -> None:
    credential = deliver(store)
    auth = {"X-aws-ec2-metadata-token": session_token(server)}
    for path in (CREDS, CREDS[:-1]):
        assert call(server.port, path=path, headers=auth)[::2] == (200, b"web")
    status, _, body = call(server.port, path=CREDS + "web", headers=auth)
    assert status == 200
    aws = credential.material
    assert aws is not None
    assert json.loads(body) == {
        "Code": "Success", "LastUpdated": utc_iso(credential.issued_at), "Type": "AWS-HMAC",
        "AccessKeyId": aws.access_key_id, "SecretAccessKey": aws.secret_access_key,
        "Token": aws.session_token, "Expiration": utc_iso(credential.expires_at)}


def test_other_paths_and_methods(server: ImdsServer, store: CredentialStore) -> None:
    deliver(store)
    auth = {"X-aws-ec2-metadata-token": session_token(server)}
    assert call(server.port, path=CREDS + "other", headers=auth)[0] == 404
    assert call(server.port, path="/latest/meta-data/", headers=auth)[0] == 404
    assert call(server.port, path="/latest/api/token", headers=auth)[0] == 405
    assert call(server.port, "PUT", CREDS, headers={TTL: "60"})[0] == 405
    assert call(server.port, "POST", "/latest/api/token", headers={TTL: "60"})[0] == 405


def test_expired_or_missing_credential_is_503_without_material(
        server: ImdsServer, store: CredentialStore, clocks: Clocks) -> None:
    auth = {"X-aws-ec2-metadata-token": session_token(server)}
    assert call(server.port, path=CREDS + "web", headers=auth)[0] == 503  # none yet
    credential = deliver(store, lifetime=900)
    clocks.wall = credential.expires_at + 1
    status, _, body = call(server.port, path=CREDS + "web", headers=auth)
    assert status == 503
    assert json.loads(body)["Code"] == "CredentialUnavailable"
    assert not any(s.encode() in body for s in credential.secrets())


def test_botocore_instance_metadata_fetcher(server: ImdsServer, store: CredentialStore) -> None:
    """botocore's own IMDSv2 flow (PUT token, list roles, fetch) against the emulator."""
    credential = deliver(store)
    fetcher = botocore.utils.InstanceMetadataFetcher(
        timeout=2, num_attempts=1, config={"ec2_metadata_service_endpoint": server.url + "/",
                                           "ec2_metadata_v1_disabled": True})
    got = fetcher.retrieve_iam_role_credentials()
    aws = credential.material
    assert aws is not None
    assert got["role_name"] == "web"
    assert (got["access_key"], got["secret_key"], got["token"]) == (
        aws.access_key_id, aws.secret_access_key, aws.session_token)


def test_botocore_gets_nothing_while_expired(server: ImdsServer) -> None:
    fetcher = botocore.utils.InstanceMetadataFetcher(
        timeout=2, num_attempts=1, config={"ec2_metadata_service_endpoint": server.url})
    assert fetcher.retrieve_iam_role_credentials() == {}
