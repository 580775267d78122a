"""No Azure token, client assertion or secret header in any log line, summary or error
the bridge prints: `once` and `run` as processes at DEBUG, through a success, Entra
refusals, an Entra error that quotes the assertion back, and the managed-identity
endpoints refusing a wrong secret header."""

from __future__ import annotations

import os
import signal
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from bridge.clouds.azure.managed_identity import APP_SERVICE_PATH
from bridge.devstack import (
    AZURE_CLIENT_ID,
    AZURE_STORAGE_SCOPE,
    AZURE_TENANT_ID,
    ECHO_TOKEN,
    DevStack,
    HttpFailure,
)
from bridge.devstack.azure import OP_TOKEN
from tests.conftest import WriteConfig
from tests.support.process import bridge_cli, free_port, start_bridge, stop
from tests.support.wait import wait_for

pytestmark = pytest.mark.integration


def _azure(stack: DevStack, **extra: object) -> dict[str, object]:
    return {"tenant_id": AZURE_TENANT_ID, "client_id": AZURE_CLIENT_ID,
            "scopes": [AZURE_STORAGE_SCOPE], "authority_host": stack.azure_authority, **extra}


def _secrets(stack: DevStack) -> set[str]:
    found = {r.form["client_assertion"] for r in stack.azure.requests
             if r.operation == OP_TOKEN and r.form.get("client_assertion")}
    found |= {t.access_token for t in stack.azure.issued}
    assert found, "nothing was exchanged: the check below would prove nothing"
    return found


def _env(stack: DevStack) -> dict[str, str]:
    return {**os.environ, "REQUESTS_CA_BUNDLE": str(stack.ca_file)}


def test_once_prints_no_token_or_assertion(stack: DevStack, write_config: WriteConfig) -> None:
    """A success, a refusal, and an Entra error quoting the assertion: none of the
    assertions or tokens is in stdout or stderr (at DEBUG)."""
    printed = ""
    config = write_config(targets=[{"name": "az", "azure": _azure(stack)}])
    for fault in (None, "refusal", "echo"):
        if fault == "refusal":
            config = write_config(targets=[{"name": "az", "spiffe_id": "spiffe://example.org/demo",
                                            "azure": _azure(stack, client_id="00000000-0000-"
                                                            "0000-0000-000000000009")}])
        if fault == "echo":
            config = write_config(targets=[{"name": "az", "azure": _azure(stack)}])
            stack.azure.faults.fail_next(OP_TOKEN, HttpFailure(
                400, "invalid_client", f"AADSTS700027: bad assertion {ECHO_TOKEN}"), times=2)
        run = bridge_cli("once", "--log-level", "DEBUG", "--config", str(config),
                         env=_env(stack))
        assert run.returncode == (0 if fault is None else 1), run.stdout + run.stderr
        printed += run.stdout + run.stderr
    assert "AADSTS700016" in printed
    assert "AADSTS700027" in printed
    assert "bad assertion" in printed  # Entra quoted it back, and it was masked
    leaked = [s[:12] for s in _secrets(stack) if s in printed]
    assert not leaked, f"{len(leaked)} secret(s) printed"
    assert "eyJ" not in printed.replace("[REDACTED]", "")


def test_run_logs_no_token_assertion_or_secret_header(
        stack: DevStack, write_config: WriteConfig, short_dir: Path) -> None:
    """The daemon at DEBUG, serving both managed-identity forms, asked with a wrong and
    a right secret header: its log holds no token, assertion or header value."""
    app = free_port()
    config = write_config(targets=[{"name": "az", "serve": ["azure_app_service"],
                                    "azure": _azure(stack)}])
    doc = yaml.safe_load(config.read_text())
    header_file = short_dir / "identity.header"
    doc["metadata"] = {"azure_app_service": {"address": f"127.0.0.1:{app}",
                                             "header_file": str(header_file)}}
    config.write_text(yaml.safe_dump(doc))
    log = short_dir / "bridge.log"
    proc = start_bridge("run", "--log-level", "DEBUG", "--config", str(config), log=log,
                        env=_env(stack))
    try:
        wait_for(header_file.exists, "the header file")
        wait_for(lambda: stack.azure.issued, "a token")
        secret = header_file.read_text()
        url = (f"http://127.0.0.1:{app}{APP_SERVICE_PATH}?api-version=2019-08-01"
               "&resource=https://storage.azure.com")
        wrong = urllib.request.Request(url, headers={"X-IDENTITY-HEADER": secret + "x"})
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(wrong, timeout=5)
        assert refused.value.code == 403
        assert secret not in refused.value.read().decode()
        right = urllib.request.Request(url, headers={"X-IDENTITY-HEADER": secret})
        with urllib.request.urlopen(right, timeout=5) as answer:
            assert answer.status == 200
        proc.send_signal(signal.SIGHUP)  # a reload logs the listeners again
    finally:
        code, _, _ = stop(proc)
    text = log.read_text()
    assert code == 0, text[-2000:]
    assert "refreshed az" in text
    for value in {*_secrets(stack), secret, secret + "x"}:
        assert value not in text
