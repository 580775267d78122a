"""Shared helpers for the deployment tests: paths, tools, rendering, manifests as data.

Tools come from the cache that tests/tools/install-deploy-tools.sh fills, then from PATH.
A missing tool skips the test, except under CI=true, where it fails (README's rule).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.support.require import unavailable

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
CHART = DEPLOY / "helm" / "spiffe-bridge"
KUBERNETES = DEPLOY / "kubernetes"
SYSTEMD = DEPLOY / "systemd"
CONTAINER = DEPLOY / "container"
DOCS = DEPLOY / "docs"
ALERTS = DEPLOY / "prometheus" / "alerts.yaml"
VALUES = REPO / "tests" / "deploy" / "values"
VALIDATOR = Path(__file__).resolve().parent / "manifests.py"
INSTALL = "bash tests/tools/install-deploy-tools.sh"

RELEASE = "rel"
NAMESPACE = "spiffe-bridge"
# The oldest Kubernetes the manifests claim (native sidecars are on by default from 1.29)
# and the newest whose schemas kubernetes-validate bundles.
KUBE_VERSIONS = ("1.29.0", "1.37.0")
# Chart renderings under test: name -> values files.
RENDERINGS: dict[str, tuple[Path, ...]] = {
    "default": (),
    "all-on": (VALUES / "all-on.yaml",),
    "all-off": (VALUES / "all-off.yaml",),
    "broker": (VALUES / "broker.yaml",),
}
# The job label the alert rules select (SpiffeBridgeDown).
ALERT_JOB = "spiffe-bridge"

Doc = dict[str, Any]


def tools_dir() -> Path:
    """The install script's cache (same expression as the script)."""
    if explicit := os.environ.get("SPIFFE_BRIDGE_TOOLS"):
        return Path(explicit)
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "spiffe-bridge" / "tools"


def missing_tool(what: str) -> None:
    """Skip without the tool, but fail under CI=true. Never returns."""
    message = f"{what} not found (install: {INSTALL})"
    unavailable(message)


def _newest(paths: Iterable[Path]) -> Path | None:
    def key(p: Path) -> tuple[int, ...]:
        return tuple(int(n) for n in re.findall(r"\d+", p.as_posix().split("/tools/")[-1]))
    found = sorted((p for p in paths if p.exists()), key=key)
    return found[-1] if found else None


def helm() -> str:
    """helm v3: the cached build, else one on PATH."""
    cached = _newest(tools_dir().glob("helm-v3.*/bin/helm"))
    path = str(cached) if cached else shutil.which("helm")
    if path is None:
        missing_tool("helm")
    assert path is not None
    return path


def validator_python() -> str:
    """An interpreter that can import kubernetes_validate (the cached venv first)."""
    cached = _newest(tools_dir().glob("kubernetes-validate-*/bin/python"))
    if cached is not None:
        return str(cached)
    probe = subprocess.run([sys.executable, "-c", "import kubernetes_validate"],
                           capture_output=True, check=False)
    if probe.returncode == 0:
        return sys.executable
    missing_tool("kubernetes-validate")
    raise AssertionError("unreachable")


def crd_files() -> list[Path]:
    """The cached CRDs: ServiceMonitor, PrometheusRule, ClusterSPIFFEID."""
    wanted = ("monitoring.coreos.com_servicemonitors", "monitoring.coreos.com_prometheusrules",
              "spire.spiffe.io_clusterspiffeids")
    found = [_newest((tools_dir() / "crds").glob(f"{name}-*.yaml")) for name in wanted]
    if None in found:
        missing_tool(f"the CRDs {', '.join(wanted)} in {tools_dir() / 'crds'}")
    return [p for p in found if p is not None]


def systemd_analyze() -> str:
    path = shutil.which("systemd-analyze")
    if path is None:
        missing_tool("systemd-analyze")
    assert path is not None
    return path


def run(args: list[str], *, stdin: str | None = None, timeout: float = 60,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, input=stdin, capture_output=True, text=True, timeout=timeout,
                          env=env, cwd=REPO, check=False)


# -- manifests as data -------------------------------------------------------------------


def load_docs(text: str) -> list[Doc]:
    return [d for d in yaml.safe_load_all(text) if d]


def render_chart(*values: Path, extra: Iterable[str] = ()) -> list[Doc]:
    proc = run([helm(), "template", RELEASE, str(CHART), "--namespace", NAMESPACE,
                *(a for v in values for a in ("--values", str(v))), *extra])
    assert proc.returncode == 0, proc.stderr
    return load_docs(proc.stdout)


def raw_manifests() -> dict[str, list[Doc]]:
    """file name -> documents, for every YAML file in deploy/kubernetes/."""
    return {p.name: load_docs(p.read_text()) for p in sorted(KUBERNETES.glob("*.yaml"))}


def one(docs: Iterable[Doc], kind: str, name: str | None = None) -> Doc:
    matches = [d for d in docs if d["kind"] == kind
               and (name is None or d["metadata"]["name"] == name)]
    assert len(matches) == 1, f"expected one {kind} {name or ''}, got {len(matches)}"
    return matches[0]


def kinds(docs: Iterable[Doc]) -> list[str]:
    return sorted(d["kind"] for d in docs)


def validate_documents(documents: list[tuple[str, Doc]]) -> list[dict[str, Any]]:
    """Schema-validate (source, doc) pairs offline; one result per document."""
    request = {"kube_versions": list(KUBE_VERSIONS), "crds": [str(p) for p in crd_files()],
               "documents": [{"source": s, "doc": d} for s, d in documents]}
    proc = run([validator_python(), str(VALIDATOR)], stdin=json.dumps(request), timeout=120)
    assert proc.returncode == 0, proc.stderr
    results: list[dict[str, Any]] = json.loads(proc.stdout)
    assert len(results) == len(documents)
    return results


# -- a bridge pod and its config -----------------------------------------------------------


@dataclass(frozen=True)
class BridgeContainer:
    """A container that runs spiffe-bridge, its pod spec, and the config it is given."""

    where: str
    container: Doc
    pod: Doc
    config: Doc
    config_text: str

    @property
    def command(self) -> str:
        return str(self.container["args"][0])

    def mount(self, path: str) -> tuple[Doc, Doc]:
        """The (volumeMount, volume) whose mountPath is `path` or holds it."""
        best: Doc | None = None
        for m in self.container.get("volumeMounts", []):
            mp = m["mountPath"].rstrip("/")
            if (path == mp or path.startswith(mp + "/")) and (
                    best is None or len(mp) > len(best["mountPath"])):
                best = m
        assert best is not None, f"{self.where}: nothing is mounted at {path}"
        volume = next(v for v in self.pod["volumes"] if v["name"] == best["name"])
        return best, volume


def pod_spec(workload: Doc) -> Doc:
    spec: Doc = workload["spec"]["template"]["spec"]
    return spec


def bridge_containers(where: str, docs: list[Doc]) -> Iterator[BridgeContainer]:
    """Every container whose args start with run/once, with the config it mounts."""
    config_maps = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ConfigMap"}
    for workload in (d for d in docs if d["kind"] in {"DaemonSet", "Deployment"}):
        pod = pod_spec(workload)
        for c in pod.get("initContainers", []) + pod["containers"]:
            args = c.get("args") or []
            if not args or args[0] not in {"run", "once"}:
                continue
            config_path = args[args.index("--config") + 1]
            dummy = BridgeContainer(where, c, pod, {}, "")
            mount, volume = dummy.mount(config_path)
            assert "configMap" in volume, f"{where}: {config_path} is not from a ConfigMap"
            cm = config_maps[volume["configMap"]["name"]]
            relative = config_path[len(mount["mountPath"].rstrip("/")) + 1:]
            items = {i["path"]: i["key"] for i in volume["configMap"].get("items", [])}
            key = items.get(relative, relative) if items else relative
            text = cm["data"][key]
            yield BridgeContainer(f"{where}:{workload['metadata']['name']}/{c['name']}",
                                  c, pod, yaml.safe_load(text), text)


def unix_path(uri: str) -> str:
    assert uri.startswith("unix://"), uri
    return uri.removeprefix("unix://")
