"""Azure material over the gRPC API: ListTargets names the cloud, GetCredential and
WatchCredential carry the Entra token (`Credential.azure`), read back by bridge.client
as an AzureToken, the same as azure/<t>.json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bridge.client import BridgeClient
from bridge.clouds.azure import AzureToken
from bridge.devstack import AZURE_CLIENT_ID, AZURE_STORAGE_SCOPE, AZURE_TENANT_ID, DevStack
from tests.support.running import StartBridge

pytestmark = pytest.mark.integration


def test_azure_credential_over_grpc(start_bridge: StartBridge, stack: DevStack,
                                    socket_uri: str, outdir: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(stack.ca_file))
    start_bridge([{"name": "blob", "azure": {
        "tenant_id": AZURE_TENANT_ID, "client_id": AZURE_CLIENT_ID,
        "scopes": [AZURE_STORAGE_SCOPE], "authority_host": stack.azure_authority}}])
    client = BridgeClient(socket_uri)
    try:
        (target,) = client.list_targets()
        assert (target.name, target.cloud) == ("blob", "azure")
        served = client.get_credential("blob")
        watched = next(iter(client.watch("blob")))
    finally:
        client.close()
    doc = json.loads((outdir / "azure" / "blob.json").read_text())
    for credential in (served, watched):
        material = credential.material
        assert isinstance(material, AzureToken)
        assert material.access_token == doc["access_token"]
        assert (material.tenant_id, material.client_id, material.resource) == (
            AZURE_TENANT_ID, AZURE_CLIENT_ID, "https://storage.azure.com")
        assert credential.expires_at == doc["expires_on"]
