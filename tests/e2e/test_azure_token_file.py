"""azure-identity's WorkloadIdentityCredential on the daemon's federated token file
(AZURE_FEDERATED_TOKEN_FILE), across rewrites of the file, while a sweeper reads the
file all along: it never holds a token with under 10 minutes left.

The rewrite schedule itself (hours of rewrites, each leaving 600 s + margin) is proven
on a virtual clock in tests/unit/refresh/test_azure_windows.py; here the real daemon
rewrites the file at start and on each reload (SIGHUP) that changes the target, so a
real credential sees several generations of it in seconds."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import jwt
import pytest
import yaml
from azure.identity import WorkloadIdentityCredential

from bridge.clouds.azure import FEDERATED_FILE_MIN
from bridge.devstack import (
    AZURE_CLIENT_ID,
    AZURE_STORAGE_SCOPE,
    AZURE_TENANT_ID,
    DevStack,
)
from tests.conftest import WriteConfig
from tests.support.process import start_bridge, stop
from tests.support.wait import wait_for

pytestmark = pytest.mark.integration
DEMO = "spiffe://example.org/demo"


class Sweeper:
    """Reads the file every 50 ms: the least time any content had left, and each content."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.least = float("inf")
        self.seen: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Sweeper:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            try:
                token = self.path.read_text()
            except OSError:
                continue
            exp = jwt.decode(token, options={"verify_signature": False})["exp"]
            self.least = min(self.least, exp - time.time())
            if not self.seen or self.seen[-1] != token:
                self.seen.append(token)


@pytest.fixture
def trusting(stack: DevStack, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(stack.ca_file))
    return {**os.environ, "REQUESTS_CA_BUNDLE": str(stack.ca_file)}


def test_workload_identity_credential_across_file_rewrites(
        stack: DevStack, write_config: WriteConfig, outdir: Path,
        trusting: dict[str, str]) -> None:
    """Each generation of the file is a JWT-SVID Entra exchanges for the bridge's app; a
    credential that read an older one keeps working (its copy still has time), a new
    one reads the current file; no content ever had under 10 minutes left."""
    stack.workload.set_svid_ttl(1800)
    config = write_config(targets=[{"name": "az", "jwt_file": True, "azure": {
        "tenant_id": AZURE_TENANT_ID, "client_id": AZURE_CLIENT_ID,
        "scopes": [AZURE_STORAGE_SCOPE], "authority_host": stack.azure_authority,
        "federated_token_file": True, "svid_ttl": "30m"}}])
    path = outdir / "jwt" / "az.jwt"
    proc = start_bridge("run", "--config", str(config), env=trusting)
    try:
        with Sweeper(path) as sweeper:
            wait_for(lambda: sweeper.seen, "the federated token file")
            first_reader = WorkloadIdentityCredential(
                tenant_id=AZURE_TENANT_ID, client_id=AZURE_CLIENT_ID,
                token_file_path=str(path), authority=stack.azure_authority)
            first = first_reader.get_token(AZURE_STORAGE_SCOPE)
            issued = stack.azure.whoami(first.token)
            assert issued is not None
            assert issued.subject == DEMO
            for generation in range(2, 5):
                doc = yaml.safe_load(config.read_text())  # a changed target is rebuilt
                doc["targets"][0]["azure"]["svid_ttl"] = 1800 + generation
                config.write_text(yaml.safe_dump(doc))
                proc.send_signal(signal.SIGHUP)
                wait_for(lambda g=generation: len(sweeper.seen) >= g,  # type: ignore[misc]
                         f"file generation {generation}")
                current = sweeper.seen[-1]
                reader = WorkloadIdentityCredential(
                    tenant_id=AZURE_TENANT_ID, client_id=AZURE_CLIENT_ID,
                    token_file_path=str(path), authority=stack.azure_authority)
                token = reader.get_token(AZURE_STORAGE_SCOPE).token
                assert stack.azure.whoami(token) is not None
                assertions = [r.form["client_assertion"] for r in stack.azure.requests
                              if r.operation == "token"]
                assert assertions[-1] == current
                # The first reader still holds generation 1 (cached for 600 s) and a new
                # exchange with it (claims bypass its token cache) still succeeds.
                again = first_reader.get_token(AZURE_STORAGE_SCOPE, claims='{"x":1}').token
                assert stack.azure.whoami(again) is not None
                assert [r.form["client_assertion"] for r in stack.azure.requests
                        if r.operation == "token"][-1] == sweeper.seen[0]
        assert len(sweeper.seen) >= 4
        assert sweeper.least >= FEDERATED_FILE_MIN - 5  # sampling lag only
        assert sweeper.least >= 600
    finally:
        code, _, err = stop(proc)
    assert code == 0, err
    assert "Traceback" not in err
