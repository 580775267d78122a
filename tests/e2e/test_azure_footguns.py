"""`metadata.azure_app_service.header_file` over an unrelated file: `check` and `run`
refuse it naming the key (the container token file's rule), the file untouched."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from bridge.devstack import AZURE_CLIENT_ID, AZURE_STORAGE_SCOPE, AZURE_TENANT_ID, DevStack
from tests.conftest import WriteConfig
from tests.support.process import bridge_cli, free_port

pytestmark = pytest.mark.integration


def test_a_header_file_over_an_unrelated_file_is_refused(
        stack: DevStack, write_config: WriteConfig, short_dir: Path) -> None:
    precious = short_dir / "app.conf"
    precious.write_text("database_password = hunter2\n")
    config = write_config(targets=[{"name": "az", "serve": ["azure_app_service"], "azure": {
        "tenant_id": AZURE_TENANT_ID, "client_id": AZURE_CLIENT_ID,
        "scopes": [AZURE_STORAGE_SCOPE], "authority_host": stack.azure_authority}}])
    doc = yaml.safe_load(config.read_text())
    doc["metadata"] = {"azure_app_service": {"address": f"127.0.0.1:{free_port()}",
                                             "header_file": str(precious)}}
    config.write_text(yaml.safe_dump(doc))
    for command in ("check", "run"):
        proc = bridge_cli(command, "--config", str(config), timeout=40)
        assert proc.returncode == 2, (command, proc.stdout, proc.stderr)
        assert "metadata.azure_app_service.header_file: " in proc.stderr
        assert "Point header_file at a new path" in proc.stderr
        assert "Traceback" not in proc.stderr
    assert precious.read_text() == "database_password = hunter2\n"
