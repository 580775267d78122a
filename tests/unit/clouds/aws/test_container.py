"""The AWS container credentials endpoint, with botocore's own fetcher and provider as
the client wherever a client is involved."""

from __future__ import annotations

import json
import os
import socket
import stat
from collections.abc import Iterator
from pathlib import Path

import botocore.credentials
import botocore.utils
import pytest
from prometheus_client import CollectorRegistry

from bridge.clouds.aws import AwsHopConfig
from bridge.clouds.aws.container import ContainerConfig, ContainerServer
from bridge.clouds.gcp import GcpHopConfig
from bridge.config import TargetConfig
from bridge.errors import OutputError
from bridge.metrics import Metrics
from bridge.model import Credential, utc_iso
from bridge.serving.metadata import LocalTokens
from bridge.store import CredentialStore
from tests.support.local_http import call, count
from tests.support.values import aws_credential, tmpfs_dir

ROLE = "arn:aws:iam::111122223333:role/app"
NOW = 1_900_000_000.0


class Now:
    def __init__(self) -> None:
        self.value = NOW

    def __call__(self) -> float:
        return self.value


def aws_target(name: str, role: str = ROLE, *, serve: tuple[str, ...] = ("container",)
               ) -> TargetConfig:
    return TargetConfig(name=name, audience="sts.amazonaws.com", serve=serve,
                        hops=(AwsHopConfig(role_arn=role, region="us-east-1"),))


@pytest.fixture
def now() -> Now:
    return Now()


@pytest.fixture
def store() -> CredentialStore:
    return CredentialStore(["app", "other", "quiet"])


@pytest.fixture
def workdir() -> Iterator[Path]:
    d = tmpfs_dir()
    yield d
    for p in sorted(d.rglob("*"), reverse=True):
        p.rmdir() if p.is_dir() and not p.is_symlink() else p.unlink()
    d.rmdir()


@pytest.fixture
def metrics() -> Metrics:
    return Metrics(CollectorRegistry())


@pytest.fixture
def server(store: CredentialStore, now: Now, workdir: Path,
           metrics: Metrics) -> Iterator[ContainerServer]:
    targets = [aws_target("app"), aws_target("other", "arn:aws:iam::444455556666:role/o")]
    s = ContainerServer(ContainerConfig("127.0.0.1:0", workdir / "new" / "dir" / "c.token"),
                        targets, store=store, now=now, metrics=metrics)
    s.start()
    yield s
    s.stop()


def deliver(store: CredentialStore, name: str, *, now: float = NOW,
            lifetime: float = 3600.0) -> Credential:
    credential = aws_credential(name, now=now, lifetime=lifetime)
    store.succeeded(name, credential, now)
    return credential


def token(server: ContainerServer) -> str:
    return server.token_file.read_text()


def material(credential: Credential) -> list[bytes]:
    return [s.encode() for s in credential.secrets()]


def test_token_file_is_private_atomic_and_without_newline(server: ContainerServer,
                                                          workdir: Path) -> None:
    path = server.token_file
    data = path.read_bytes()
    assert len(data) >= 40
    assert not data.endswith(b"\n")
    assert data.decode().isascii()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    for created in (workdir / "new", workdir / "new" / "dir"):
        assert stat.S_IMODE(created.stat().st_mode) == 0o700
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp left


def test_token_survives_a_restart_and_the_file_stays(store: CredentialStore, now: Now,
                                                     workdir: Path) -> None:
    """A reload restarts the listener: same token, so clients that read the file keep
    working; another token file (another config) gets its own token."""
    workdir.chmod(0o755)
    config = ContainerConfig("127.0.0.1:0", workdir / "c.token")
    tokens = LocalTokens()  # the supervisor's: one for the process
    seen = []
    for _ in range(2):
        s = ContainerServer(config, [aws_target("app")], store=store, now=now, tokens=tokens)
        s.start()
        seen.append(config.token_file.read_text())
        s.stop()
        assert config.token_file.exists()
    assert seen[0] == seen[1]
    other = ContainerServer(ContainerConfig("127.0.0.1:0", workdir / "d.token"),
                            [aws_target("app")], store=store, now=now, tokens=tokens)
    other.start()
    other.stop()
    assert (workdir / "d.token").read_text() != seen[0]
    assert stat.S_IMODE(workdir.stat().st_mode) == 0o755  # an existing parent is left alone


def test_a_rewritten_token_file_is_restored_at_start(store: CredentialStore, now: Now,
                                                     workdir: Path) -> None:
    config = ContainerConfig("127.0.0.1:0", workdir / "c.token")
    s = ContainerServer(config, [aws_target("app")], store=store, now=now)
    s.start()
    s.stop()
    token = config.token_file.read_text()
    config.token_file.write_text("tampered")
    s.start()
    try:
        assert config.token_file.read_text() == token
        assert call(s.port, path="/v1/credentials/app",
                    headers={"Authorization": "tampered"})[0] == 403
    finally:
        s.stop()


def test_a_symlink_at_the_token_file_is_refused_and_nothing_listens(
        store: CredentialStore, now: Now, workdir: Path) -> None:
    (workdir / "elsewhere").write_text("x")
    (workdir / "c.token").symlink_to(workdir / "elsewhere")
    s = ContainerServer(ContainerConfig("127.0.0.1:0", workdir / "c.token"),
                        [aws_target("app")], store=store, now=now)
    with pytest.raises(OutputError):
        s.start()
    assert (workdir / "elsewhere").read_text() == "x"
    s.stop()  # harmless after a failed start


def test_serves_the_container_provider_json(server: ContainerServer,
                                            store: CredentialStore) -> None:
    credential = deliver(store, "app")
    status, headers, body = call(server.port, path="/v1/credentials/app",
                                 headers={"Authorization": token(server)})
    assert status == 200
    assert headers["Content-Type"] == "application/json"
    assert headers["Cache-Control"] == "no-store"
    aws = credential.material
    assert aws is not None
    assert json.loads(body) == {
        "AccessKeyId": aws.access_key_id, "SecretAccessKey": aws.secret_access_key,
        "Token": aws.session_token, "Expiration": utc_iso(credential.expires_at),
        "RoleArn": ROLE, "AccountId": "111122223333"}


def test_a_new_credential_is_served_at_once(server: ContainerServer,
                                            store: CredentialStore) -> None:
    auth = {"Authorization": token(server)}
    first = deliver(store, "app")
    assert json.loads(call(server.port, path="/v1/credentials/app", headers=auth)[2])[
        "AccessKeyId"] == first.material.access_key_id  # type: ignore[union-attr]
    second = deliver(store, "app", now=NOW + 10)
    assert json.loads(call(server.port, path="/v1/credentials/app", headers=auth)[2])[
        "AccessKeyId"] == second.material.access_key_id  # type: ignore[union-attr]


@pytest.mark.parametrize(("headers", "code"), [
    ({}, 401),
    ({"Authorization": "wrong"}, 403),
    ({"Authorization": ""}, 403),
])
def test_missing_or_wrong_token_is_refused_without_material(
        server: ContainerServer, store: CredentialStore, metrics: Metrics,
        headers: dict[str, str], code: int) -> None:
    credential = deliver(store, "app")
    status, _, body = call(server.port, path="/v1/credentials/app", headers=headers)
    assert status == code
    assert not any(m in body for m in material(credential))
    assert token(server).encode() not in body
    assert count(metrics, "spiffe_bridge_metadata_refusals_total", endpoint="container",
                 reason="token") == 1


def test_a_token_prefix_or_two_headers_are_refused(server: ContainerServer,
                                                   store: CredentialStore) -> None:
    deliver(store, "app")
    assert call(server.port, path="/v1/credentials/app",
                headers={"Authorization": token(server)[:-1]})[0] == 403
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
        s.sendall(f"GET /v1/credentials/app HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
                  f"Authorization: {token(server)}\r\nAuthorization: x\r\n\r\n".encode())
        assert s.recv(4096).startswith(b"HTTP/1.1 403 ")


def test_target_names_are_not_revealed_without_the_token(server: ContainerServer) -> None:
    assert call(server.port, path="/v1/credentials/nope")[0] == 401
    assert call(server.port, path="/v1/credentials/nope",
                headers={"Authorization": token(server)})[0] == 404
    # a target the config does not serve here is unknown too
    assert call(server.port, path="/v1/credentials/quiet",
                headers={"Authorization": token(server)})[0] == 404
    assert call(server.port, path="/latest/meta-data/")[0] == 404


def test_no_credential_yet_is_503_json(server: ContainerServer) -> None:
    status, _, body = call(server.port, path="/v1/credentials/app",
                           headers={"Authorization": token(server)})
    assert status == 503
    assert json.loads(body)["Code"] == "CredentialUnavailable"


def test_an_expired_credential_still_in_the_store_is_never_served(
        server: ContainerServer, store: CredentialStore, now: Now) -> None:
    """Between expiry and the scheduler dropping it, the store still holds it: 503."""
    credential = deliver(store, "app", lifetime=900)
    now.value = credential.expires_at
    status, _, body = call(server.port, path="/v1/credentials/app",
                           headers={"Authorization": token(server)})
    assert status == 503
    assert not any(m in body for m in material(credential))


def test_foreign_host_is_refused_even_with_the_token(server: ContainerServer,
                                                     store: CredentialStore) -> None:
    credential = deliver(store, "app")
    status, _, body = call(server.port, path="/v1/credentials/app",
                           headers={"Authorization": token(server),
                                    "Host": f"rebind.example:{server.port}"})
    assert status == 403
    assert not any(m in body for m in material(credential))


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_botocore_fetcher_accepts_the_documented_urls(server: ContainerServer,
                                                      store: CredentialStore,
                                                      host: str) -> None:
    """botocore's allow-list: plain http to a loopback IP or `localhost` only."""
    credential = deliver(store, "app")
    fetcher = botocore.utils.ContainerMetadataFetcher()
    doc = fetcher.retrieve_full_uri(f"http://{host}:{server.port}/v1/credentials/app",
                                    headers={"Authorization": token(server)})
    assert doc["AccessKeyId"] == credential.material.access_key_id  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="Unsupported host"):
        fetcher.retrieve_full_uri(f"http://metadata.example:{server.port}/v1/credentials/app")


def test_botocore_container_provider_reads_the_token_file(server: ContainerServer,
                                                          store: CredentialStore) -> None:
    """The provider as the default chain builds it, from the two documented variables."""
    credential = deliver(store, "app")
    provider = botocore.credentials.ContainerProvider(environ={
        "AWS_CONTAINER_CREDENTIALS_FULL_URI": f"{server.url}/v1/credentials/app",
        "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE": os.fspath(server.token_file)})
    creds = provider.load()
    assert creds is not None
    frozen = creds.get_frozen_credentials()
    aws = credential.material
    assert aws is not None
    assert (frozen.access_key, frozen.secret_key, frozen.token) == (
        aws.access_key_id, aws.secret_access_key, aws.session_token)
    assert creds.account_id == "111122223333"


def test_gcp_targets_are_never_listed(store: CredentialStore, now: Now,
                                      workdir: Path) -> None:
    gcp = TargetConfig(name="other", audience="x", serve=("container",),
                       hops=(GcpHopConfig(workload_identity_provider="//iam.googleapis.com/x"),))
    s = ContainerServer(ContainerConfig("127.0.0.1:0", workdir / "c.token"),
                        [aws_target("app"), gcp], store=store, now=now)
    s.start()
    try:
        assert call(s.port, path="/v1/credentials/other",
                    headers={"Authorization": token(s)})[0] == 404
        assert "for app (" in s.describe()
    finally:
        s.stop()


def test_botocore_fetcher_accepts_ipv6_loopback(store: CredentialStore, now: Now,
                                                workdir: Path) -> None:
    s = ContainerServer(ContainerConfig("[::1]:0", workdir / "c.token"),
                        [aws_target("app")], store=store, now=now)
    try:
        s.start()
    except OSError:
        pytest.skip("no IPv6 loopback here")
    try:
        credential = deliver(store, "app")
        doc = botocore.utils.ContainerMetadataFetcher().retrieve_full_uri(
            f"{s.url}/v1/credentials/app", headers={"Authorization": token(s)})
        assert s.url.startswith("http://[::1]:")
        assert doc["AccessKeyId"] == credential.material.access_key_id  # type: ignore[union-attr]
    finally:
        s.stop()
