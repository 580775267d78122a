"""A real Azure client does real work with the bridge's token: azure-storage-blob
creates a container, uploads and reads back a blob on Azurite (Microsoft's Storage
emulator, npm `azurite`), started here with OAuth on over https (its certificate from
the dev stack's CA). Azurite checks a bearer token's issuer, audience and lifetime
(not its signature: it has no keys), so a token for another resource is refused.

Azurite comes from tests/tools/install-azurite.sh (`make tools`); without it the test
skips, and under CI=true it fails."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from azure.core.credentials import AccessToken
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError
from azure.storage.blob import BlobServiceClient

from bridge.cli import main
from bridge.devstack import AZURE_APP_RESOURCE, DevStack
from tests.conftest import WriteConfig
from tests.integration.azure.conftest import azure_section
from tests.support.process import free_port
from tests.support.require import unavailable
from tests.support.wait import wait_for

pytestmark = pytest.mark.integration
AZURITE_VERSION = "3.37.0"
INSTALL = "tests/tools/install-azurite.sh"
ACCOUNT = "devstoreaccount1"


def azurite_binary() -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    path = (cache / "spiffe-bridge" / "tools" / f"azurite-{AZURITE_VERSION}" / "node_modules"
            / ".bin" / "azurite-blob")
    if not (path.exists() and shutil.which("node")):
        unavailable(f"azurite not installed (install: {INSTALL})")
    return path


class FileCredential:
    """A TokenCredential over the bridge's azure/<t>.json: what a workload reading the
    credential directory does."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        doc = json.loads(self.path.read_text())
        return AccessToken(doc["access_token"], int(doc["expires_on"]))


@pytest.fixture
def azurite(stack: DevStack, short_dir: Path) -> Iterator[str]:
    binary = azurite_binary()
    work = short_dir / "azurite"
    work.mkdir()
    cert, key = stack.azure.certificates.write_server_files(work)
    port = free_port()
    proc = subprocess.Popen(
        [str(binary), "--blobHost", "127.0.0.1", "--blobPort", str(port), "--oauth", "basic",
         "--cert", str(cert), "--key", str(key), "--location", str(work / "data"),
         "--silent", "--skipApiVersionCheck", "--loose"],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

    def listening() -> bool:
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) == 0
    try:
        wait_for(lambda: listening() or proc.poll() is not None, "azurite", timeout=60)
        assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
        yield f"https://127.0.0.1:{port}/{ACCOUNT}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        if proc.stdout:
            proc.stdout.close()


def test_blob_upload_and_read_with_the_bridges_token(
        stack: DevStack, azurite: str, write_config: WriteConfig, outdir: Path,
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """The bridge's Entra token for https://storage.azure.com authorizes Blob calls; one
    for another resource is refused by Azurite (so the first one was really checked)."""
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(stack.ca_file))
    config = write_config(targets=[
        {"name": "blob", "azure": azure_section(stack)},
        {"name": "other",
         "azure": azure_section(stack, scopes=[f"{AZURE_APP_RESOURCE}/.default"])},
    ])
    assert main(["once", "--config", str(config)]) == 0, capsys.readouterr().out
    client = BlobServiceClient(azurite, credential=FileCredential(outdir / "azure" / "blob.json"))
    container = client.create_container(f"bridge-{int(time.time())}")
    body = b"written with a token from a SPIFFE identity"
    container.upload_blob("hello.txt", body)
    assert container.download_blob("hello.txt").readall() == body
    assert [b.name for b in container.list_blobs()] == ["hello.txt"]

    wrong = BlobServiceClient(azurite, credential=FileCredential(outdir / "azure" / "other.json"))
    with pytest.raises((HttpResponseError, ClientAuthenticationError)) as refused:
        wrong.get_container_client(container.container_name).download_blob("hello.txt").readall()
    assert getattr(refused.value, "status_code", 0) == 403, str(refused.value)[:300]
    assert "AuthenticationFailed" in str(refused.value)  # a v2 token for another API
