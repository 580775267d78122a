"""GCE metadata emulation, with google-auth's compute_engine code as the client."""

from __future__ import annotations

import json
from collections.abc import Iterator

import google.auth.compute_engine
import google.auth.transport.urllib3
import pytest
import urllib3
from google.auth.compute_engine import _metadata
from prometheus_client import CollectorRegistry

from bridge.clouds.gcp import GcpHopConfig, GcpToken
from bridge.clouds.gcp.gce import GceConfig, GceServer, project_from_email
from bridge.config import TargetConfig
from bridge.metrics import Metrics
from bridge.model import Credential
from bridge.store import CredentialStore
from tests.support.local_http import call, count

NOW = 1_900_000_000.0
EMAIL = "writer@my-project.iam.gserviceaccount.com"
SCOPES = ("https://www.googleapis.com/auth/cloud-platform",
          "https://www.googleapis.com/auth/userinfo.email")
FLAVOR = {"Metadata-Flavor": "Google"}
SA = "/computeMetadata/v1/instance/service-accounts/"
PROVIDER = ("//iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/p/"
            "providers/p")


class Now:
    value = NOW

    def __call__(self) -> float:
        return self.value


def gcp_target(service_account: str | None = EMAIL) -> TargetConfig:
    return TargetConfig(name="bq", audience=PROVIDER, serve=("gce",),
                        hops=(GcpHopConfig(workload_identity_provider=PROVIDER,
                                           service_account=service_account, scopes=SCOPES),))


@pytest.fixture
def now() -> Now:
    return Now()


@pytest.fixture
def store() -> CredentialStore:
    return CredentialStore(["bq"])


@pytest.fixture
def metrics() -> Metrics:
    return Metrics(CollectorRegistry())


def start(store: CredentialStore, now: Now, *, target: TargetConfig | None = None,
          project: str | None = None, metrics: Metrics | None = None) -> GceServer:
    s = GceServer(GceConfig("127.0.0.1:0", project_id=project), target or gcp_target(),
                  store=store, now=now, metrics=metrics)
    s.start()
    return s


@pytest.fixture
def server(store: CredentialStore, now: Now, metrics: Metrics) -> Iterator[GceServer]:
    s = start(store, now, metrics=metrics)
    yield s
    s.stop()


def deliver(store: CredentialStore, *, lifetime: float = 3600.0) -> Credential:
    token = "ya29.unit-" + "x" * 40
    credential = Credential(target="bq", issued_at=NOW, expires_at=NOW + lifetime,
                            svid_expires_at=NOW + 300, deadline=NOW + lifetime, received=NOW,
                            material=GcpToken(access_token=token, expires_at=NOW + lifetime,
                                              principal=EMAIL))
    store.succeeded("bq", credential, NOW)
    return credential


@pytest.mark.parametrize("headers", [{}, {"Metadata-Flavor": "google"},
                                     {"Metadata-Flavor": "Google "},
                                     {"X-Google-Metadata-Request": "True"}])
def test_requests_without_the_flavor_header_are_refused(server: GceServer,
                                                        store: CredentialStore,
                                                        metrics: Metrics,
                                                        headers: dict[str, str]) -> None:
    deliver(store)
    status, reply_headers, body = call(server.port, path=SA + "default/token",
                                       headers=headers)
    assert status == 403
    assert reply_headers["Metadata-Flavor"] == "Google"
    assert b"ya29" not in body
    assert count(metrics, "spiffe_bridge_metadata_refusals_total", endpoint="gce",
                 reason="flavor") == 1


@pytest.mark.parametrize("headers", [{"Host": "metadata.google.internal"},
                                     {"Host": "attacker.example:{p}"},
                                     {"X-Forwarded-For": "198.51.100.7"}])
def test_foreign_host_or_proxy_is_refused_with_the_flavor_header(
        server: GceServer, store: CredentialStore, headers: dict[str, str]) -> None:
    deliver(store)
    sent = {**FLAVOR, **{k: v.format(p=server.port) for k, v in headers.items()}}
    status, reply_headers, body = call(server.port, path=SA + "default/token", headers=sent)
    assert status == 403
    assert reply_headers["Metadata-Flavor"] == "Google"
    assert b"ya29" not in body


def test_every_reply_carries_the_flavor_header(server: GceServer) -> None:
    for path in ("/", SA, SA + "default/", "/nope", SA + "default/token"):
        assert call(server.port, path=path, headers=FLAVOR)[1]["Metadata-Flavor"] == "Google"


def test_ping_and_listings(server: GceServer) -> None:
    assert call(server.port, path="/", headers=FLAVOR)[::2] == (200, b"computeMetadata/\n")
    assert call(server.port, path=SA, headers=FLAVOR)[2] == f"default/\n{EMAIL}/\n".encode()
    assert call(server.port, path=SA + "default/", headers=FLAVOR)[2] == (
        b"aliases\nemail\nscopes\ntoken\n")


V1 = "/computeMetadata/v1"
LISTED = "instance/\nproject/\nuniverse/\n"


@pytest.mark.parametrize(("path", "listing"), [
    ("/computeMetadata", "v1/\n"), ("/computeMetadata/", "v1/\n"),
    (V1, LISTED), (V1 + "/", LISTED),
    (V1 + "/instance", "service-accounts/\n"), (V1 + "/instance/", "service-accounts/\n"),
    (V1 + "/project", "project-id\n"), (V1 + "/project/", "project-id\n"),
    (V1 + "/universe", "universe-domain\n"),
    (SA[:-1], f"default/\n{EMAIL}/\n"),
])
def test_directories_answer_with_and_without_the_trailing_slash(server: GceServer, path: str,
                                                                listing: str) -> None:
    """Directory paths SDKs probe (Node's gcp-metadata: `.../v1/instance`) answer their
    listing as text, like the real server, spelled either way."""
    status, headers, body = call(server.port, path=path, headers=FLAVOR)
    assert (status, body.decode()) == (200, listing)
    assert headers["Metadata-Flavor"] == "Google"
    assert headers["Content-Type"].startswith("text/plain")


def test_root_answers_without_the_flavor_header_and_directories_do_not(
        server: GceServer) -> None:
    """Go's metadata.OnGCE pings `/` without the request header and wants the reply's;
    every /computeMetadata path still requires it."""
    status, headers, body = call(server.port, path="/", headers={})
    assert (status, body, headers["Metadata-Flavor"]) == (200, b"computeMetadata/\n", "Google")
    for path in ("/computeMetadata", "/computeMetadata/", V1 + "/instance", V1 + "/project/"):
        assert call(server.port, path=path, headers={})[0] == 403, path


def test_a_leaf_is_not_a_directory(server: GceServer) -> None:
    """Only directories lose their trailing slash: an unknown path stays 404."""
    for path in (V1 + "/instancex", V1 + "/projects", "/computeMetadata/v2", "/computeMetadatax"):
        assert call(server.port, path=path, headers=FLAVOR)[0] == 404, path


@pytest.mark.parametrize("account", ["default", EMAIL])
def test_account_info_and_token_for_both_spellings(server: GceServer, store: CredentialStore,
                                                   now: Now, account: str) -> None:
    credential = deliver(store)
    status, headers, body = call(server.port, path=f"{SA}{account}/?recursive=true",
                                 headers=FLAVOR)
    assert (status, headers["Content-Type"]) == (200, "application/json")
    assert json.loads(body) == {"aliases": ["default"], "email": EMAIL, "scopes": list(SCOPES)}
    assert call(server.port, path=f"{SA}{account}/email", headers=FLAVOR)[2] == EMAIL.encode()
    assert call(server.port, path=f"{SA}{account}/scopes", headers=FLAVOR)[2] == (
        "".join(f"{s}\n" for s in SCOPES).encode())
    assert call(server.port, path=f"{SA}{account}/aliases", headers=FLAVOR)[2] == b"default\n"
    now.value = NOW + 600.7
    status, headers, body = call(server.port, path=f"{SA}{account}/token?scopes=a,b",
                                 headers=FLAVOR)
    assert (status, headers["Content-Type"]) == (200, "application/json")
    assert isinstance(credential.material, GcpToken)
    assert json.loads(body) == {"access_token": credential.material.access_token,
                                "expires_in": 2999, "token_type": "Bearer"}


def test_another_account_is_unknown(server: GceServer, store: CredentialStore) -> None:
    deliver(store)
    other = "other@my-project.iam.gserviceaccount.com"
    assert call(server.port, path=f"{SA}{other}/token", headers=FLAVOR)[0] == 404
    assert call(server.port, path=f"{SA}default/identity", headers=FLAVOR)[0] == 404


def test_project_id_from_config_else_from_the_email(store: CredentialStore, now: Now) -> None:
    path = "/computeMetadata/v1/project/project-id"
    for project, target, want in [
        ("configured-1", gcp_target(), (200, b"configured-1")),
        (None, gcp_target(), (200, b"my-project")),
        (None, gcp_target("123-compute@developer.gserviceaccount.com"), (404, None)),
        (None, gcp_target(None), (404, None)),
    ]:
        s = start(store, now, target=target, project=project)
        try:
            status, _, body = call(s.port, path=path, headers=FLAVOR)
            assert (status, body if want[1] is not None else None) == want
        finally:
            s.stop()
    assert project_from_email("a@bad_project.iam.gserviceaccount.com") is None


def test_universe_domain(server: GceServer) -> None:
    assert call(server.port, path="/computeMetadata/v1/universe/universe-domain",
                headers=FLAVOR)[2] == b"googleapis.com"


def test_expired_or_missing_token_is_503_without_material(server: GceServer,
                                                          store: CredentialStore,
                                                          now: Now) -> None:
    assert call(server.port, path=SA + "default/token", headers=FLAVOR)[0] == 503
    credential = deliver(store, lifetime=600)
    now.value = credential.expires_at - 0.5  # less than a whole second left: not handed out
    status, _, body = call(server.port, path=SA + "default/token", headers=FLAVOR)
    assert status == 503
    assert b"ya29" not in body
    now.value = credential.expires_at + 10
    assert call(server.port, path=SA + "default/token", headers=FLAVOR)[0] == 503


def test_google_auth_compute_engine_credentials(server: GceServer, store: CredentialStore,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """google-auth's own ping, info and token calls (its env is read at import time, so
    the module's host is patched; the integration test sets the variables instead)."""
    credential = deliver(store)
    monkeypatch.setattr(_metadata, "_GCE_METADATA_HOST", server.address)
    monkeypatch.setenv("GCE_METADATA_IP", server.address)
    request = google.auth.transport.urllib3.Request(urllib3.PoolManager())
    assert _metadata.ping(request)
    assert _metadata.get_project_id(request) == "my-project"
    creds = google.auth.compute_engine.Credentials()
    creds.refresh(request)
    assert isinstance(credential.material, GcpToken)
    assert creds.token == credential.material.access_token
    assert creds.service_account_email == EMAIL
    assert tuple(creds.scopes) == SCOPES
