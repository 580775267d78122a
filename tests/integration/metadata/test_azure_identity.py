"""azure-identity's ManagedIdentityCredential, in both endpoint forms, and
DefaultAzureCredential, unmodified in a clean environment, on the bridge's managed-
identity endpoints: they get the bridge's Entra token and keep getting new valid ones
as the bridge refreshes (the Entra emulator issues 24 s tokens here, so the bridge
refreshes every ~6 s and msal's managed-identity client, which treats a token with
under 5 min left as expired, asks each time). Then the refusals."""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from bridge.clouds.azure.managed_identity import APP_SERVICE_PATH, IMDS_PATH
from bridge.devstack import AZURE_CLIENT_ID, AZURE_STORAGE_SCOPE, AZURE_TENANT_ID, DevStack
from tests.integration.metadata.conftest import StartBridge, run_client
from tests.support.process import free_port

pytestmark = pytest.mark.integration
RESOURCE = AZURE_STORAGE_SCOPE.removesuffix("/.default")


def _sha(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def _target(stack: DevStack) -> dict[str, Any]:
    return {"name": "az", "serve": ["azure_imds", "azure_app_service"], "azure": {
        "tenant_id": AZURE_TENANT_ID, "client_id": AZURE_CLIENT_ID,
        "scopes": [AZURE_STORAGE_SCOPE], "authority_host": stack.azure_authority}}


@pytest.fixture
def served(stack: DevStack, start_bridge: StartBridge, short_dir: Path,
           monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(stack.ca_file))
    stack.azure.token_lifetime = 24
    imds, app = free_port(), free_port()
    header_file = short_dir / "identity.header"
    bridge = start_bridge([_target(stack)], {
        "azure_imds": {"address": f"127.0.0.1:{imds}", "allowed_uids": [os.getuid()]},
        "azure_app_service": {"address": f"127.0.0.1:{app}",
                              "header_file": str(header_file)}})
    bridge.secrets.add(header_file.read_text())
    return {"bridge": bridge, "imds": f"http://127.0.0.1:{imds}",
            "app": f"http://127.0.0.1:{app}{APP_SERVICE_PATH}", "header_file": header_file}


def _envs(served: dict[str, Any]) -> dict[str, dict[str, str]]:
    return {"imds": {"AZURE_POD_IDENTITY_AUTHORITY_HOST": served["imds"]},
            "app_service": {"IDENTITY_ENDPOINT": served["app"],
                            "IDENTITY_HEADER": served["header_file"].read_text()}}


@pytest.mark.parametrize("default", [False, True], ids=["managed_identity", "default"])
@pytest.mark.parametrize("form", ["imds", "app_service"])
def test_azure_identity_follows_the_bridge_across_refreshes(
        stack: DevStack, served: dict[str, Any], short_dir: Path, form: str,
        default: bool) -> None:
    """Distinct tokens (three; two through the default chain), each one Entra issued
    for the bridge's app, valid when handed out, with the expiry the bridge holds."""
    want = 2 if default else 3
    args = ["azure", "--scope", AZURE_STORAGE_SCOPE, "--want", str(want), "--timeout", "60"]
    run = run_client([*args, *(["--default"] if default else [])], _envs(served)[form],
                     short_dir / "home")
    assert run.code == 0, (run.lines, run.stderr[-2000:])
    tokens = [line for line in run.lines if "token" in line]
    assert len(tokens) == want
    issued = {_sha(t.access_token): t for t in stack.azure.issued}
    for line in tokens:
        token = issued[line["token"]]  # Entra issued it
        assert token.client_id == AZURE_CLIENT_ID
        assert token.resource == RESOURCE
        assert line["expires_on"] > line["now"]
        assert abs(line["expires_on"] - token.expires_at) <= 2
    kind = "DefaultAzureCredential" if default else "ManagedIdentityCredential"
    assert {line["kind"] for line in tokens} == {kind}


def _get(url: str, headers: dict[str, str]) -> tuple[int, str]:
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def test_imds_form_refusals(served: dict[str, Any]) -> None:
    """No `Metadata: true`: 400 as IMDS; forwarded: 403; another resource or identity:
    400; none of them carries a token."""
    bridge = served["bridge"]
    bridge.wait_for(lambda: bridge.credential("az") is not None, "a token")
    url = f"{served['imds']}{IMDS_PATH}?api-version=2018-02-01&resource={RESOURCE}"
    token = bridge.credential("az").material.access_token
    assert _get(url, {"Metadata": "true"})[0] == 200
    cases = [
        (url, {}, 400, "Required metadata header"),
        (url, {"Metadata": "false"}, 400, "Required metadata header"),
        (url, {"Metadata": "true", "X-Forwarded-For": "203.0.113.9"}, 403, "forwarded"),
        (url.replace(RESOURCE, "https://vault.azure.net"), {"Metadata": "true"}, 400,
         "invalid_resource"),
        (f"{url}&client_id=00000000-0000-0000-0000-000000000001", {"Metadata": "true"}, 400,
         "Identity not found"),
        (f"{served['imds']}{IMDS_PATH}?api-version=2018-02-01", {"Metadata": "true"}, 400,
         "resource"),
    ]
    for target, headers, status, says in cases:
        got, body = _get(target, headers)
        assert (got, says in body) == (status, True), (target, headers, got, body)
        assert token not in body


def test_app_service_form_refusals(served: dict[str, Any]) -> None:
    """Missing secret header: 401; wrong: 403, and the reply never echoes it."""
    bridge = served["bridge"]
    bridge.wait_for(lambda: bridge.credential("az") is not None, "a token")
    secret = served["header_file"].read_text()
    url = f"{served['app']}?api-version=2019-08-01&resource={RESOURCE}"
    assert _get(url, {"X-IDENTITY-HEADER": secret})[0] == 200
    assert _get(url, {})[0] == 401
    wrong = secret[:-1] + ("A" if secret[-1] != "A" else "B")
    status, body = _get(url, {"X-IDENTITY-HEADER": wrong})
    assert status == 403
    assert wrong not in body
    assert secret not in body
    assert _get(url, {"X-IDENTITY-HEADER": secret, "X-Forwarded-For": "203.0.113.9"})[0] == 403
    assert oct(served["header_file"].stat().st_mode & 0o777) == "0o600"
