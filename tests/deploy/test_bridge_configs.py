"""Every bridge config we ship or render passes `spiffe-bridge check` (the venv's
`python -m bridge`): the chart's ConfigMap for each values file, deploy/kubernetes's
ConfigMaps and the systemd example."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.deploy import (
    KUBERNETES,
    RENDERINGS,
    SYSTEMD,
    Doc,
    load_docs,
    one,
    render_chart,
)
from tests.support.process import bridge_cli

SOURCES = [f"chart:{name}" for name in RENDERINGS] + [
    "kubernetes/configmap.yaml", "kubernetes/sidecar-example.yaml",
    "kubernetes/daemonset-broker.yaml", "systemd/config.yaml"]


def _config_text(source: str, rendered: dict[str, list[Doc]]) -> str:
    if source.startswith("systemd/"):
        return (SYSTEMD / source.removeprefix("systemd/")).read_text()
    if source.startswith("chart:"):
        docs = rendered[source.removeprefix("chart:")]
    else:
        docs = load_docs((KUBERNETES / source.removeprefix("kubernetes/")).read_text())
    text: str = one(docs, "ConfigMap")["data"]["config.yaml"]
    return text


@pytest.mark.parametrize("source", SOURCES)
def test_spiffe_bridge_check_accepts_the_config(
        source: str, rendered: dict[str, list[Doc]], tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(_config_text(source, rendered))
    proc = bridge_cli("check", "--config", str(path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"{path}: OK (" in proc.stdout


def test_check_refuses_what_the_chart_cannot_catch(tmp_path: Path) -> None:
    """configOverride passes keys through unchecked; `check` names the bad key, which is
    why the chart's docs say to run it on the rendered config."""
    docs = render_chart(extra=["--set", "configOverride.outputs.tmpfs_only=true"])
    path = tmp_path / "config.yaml"
    path.write_text(one(docs, "ConfigMap")["data"]["config.yaml"])
    proc = bridge_cli("check", "--config", str(path))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "outputs.tmpfs_only" in proc.stderr
