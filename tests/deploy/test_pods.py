"""Every pod that runs spiffe-bridge, in the chart's renderings and in deploy/kubernetes, is
hardened and fits the config it is given: the agent socket, the output directory, the gRPC
socket and the http port in the config are where the pod spec mounts and probes them."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest

from tests.support.deploy import (
    KUBERNETES,
    RENDERINGS,
    BridgeContainer,
    Doc,
    bridge_containers,
    load_docs,
    unix_path,
)

DEFAULT_GRPC_SOCKET = "unix:///run/spiffe-bridge/bridge.sock"  # DESIGN.md's default
# Raw manifests with bridge containers; the DaemonSets take their config from configmap.yaml.
RAW = ["daemonset.yaml", "daemonset-hostpath.yaml", "sidecar-example.yaml"]
SOURCES = [f"chart:{name}" for name in RENDERINGS] + [f"kubernetes/{name}" for name in RAW]


def _docs(source: str, request: pytest.FixtureRequest) -> list[Doc]:
    """The documents of a source; a chart rendering needs helm, the raw files don't."""
    if source.startswith("chart:"):
        rendered: dict[str, list[Doc]] = request.getfixturevalue("rendered")
        return rendered[source.removeprefix("chart:")]
    name = source.removeprefix("kubernetes/")
    docs = load_docs((KUBERNETES / name).read_text())
    if name.startswith("daemonset"):
        docs += load_docs((KUBERNETES / "configmap.yaml").read_text())
    return docs


def _containers(source: str, request: pytest.FixtureRequest) -> list[BridgeContainer]:
    found = list(bridge_containers(source, _docs(source, request)))
    assert found, f"{source}: no spiffe-bridge container"
    return found


@pytest.mark.parametrize("source", SOURCES)
def test_bridge_pods_are_hardened(source: str, request: pytest.FixtureRequest) -> None:
    """Non-root numeric user, seccomp RuntimeDefault, read-only root, no capabilities,
    no privilege escalation, no Kubernetes API token."""
    for b in _containers(source, request):
        pod_sc = b.pod["securityContext"]
        assert pod_sc["runAsNonRoot"] is True, b.where
        assert isinstance(pod_sc["runAsUser"], int), b.where
        assert pod_sc["runAsUser"] > 0, b.where
        assert pod_sc["seccompProfile"] == {"type": "RuntimeDefault"}, b.where
        assert b.pod["automountServiceAccountToken"] is False, b.where
        sc = b.container["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False, b.where
        assert sc["readOnlyRootFilesystem"] is True, b.where
        assert sc["capabilities"] == {"drop": ["ALL"]}, b.where
        assert "runAsUser" not in sc, f"{b.where}: the pod's user is the bridge's user"
        assert not b.container["image"].endswith(":latest"), b.where
        assert "memory" in b.container["resources"]["limits"], b.where
        _, tmp = b.mount("/tmp/x")
        assert "emptyDir" in tmp, f"{b.where}: /tmp must be writable with a read-only root"


@pytest.mark.parametrize("source", SOURCES)
def test_config_paths_are_mounted(source: str, request: pytest.FixtureRequest) -> None:
    """Agent socket: read-only CSI (csi.spiffe.io) or hostPath directory. Credentials and
    gRPC socket: a memory-backed emptyDir, the credentials in a subdirectory the daemon
    creates and owns (it sets 0700 on it)."""
    for b in _containers(source, request):
        socket = unix_path(b.config["workload_api"]["socket"])
        mount, volume = b.mount(socket)
        assert mount.get("readOnly") is True, b.where
        if "csi" in volume:
            assert volume["csi"] == {"driver": "csi.spiffe.io", "readOnly": True}, b.where
        else:
            assert volume["hostPath"]["type"] == "Directory", b.where

        outputs = b.config["outputs"]["directory"]
        mount, volume = b.mount(outputs)
        assert volume["emptyDir"]["medium"] == "Memory", f"{b.where}: not tmpfs"
        assert outputs.startswith(mount["mountPath"].rstrip("/") + "/"), (
            f"{b.where}: outputs.directory must be below the volume's mount point")
        assert not mount.get("readOnly"), b.where
        assert "allow_non_tmpfs" not in b.config["outputs"] or (
            b.config["outputs"]["allow_non_tmpfs"] is False), b.where

        grpc = unix_path(b.config.get("grpc", {}).get("socket", DEFAULT_GRPC_SOCKET))
        mount, volume = b.mount(grpc)
        assert "emptyDir" in volume, b.where
        assert not mount.get("readOnly"), b.where


@pytest.mark.parametrize("source", SOURCES)
def test_probes_and_scrape_port_match_the_http_address(
        source: str, request: pytest.FixtureRequest) -> None:
    """The daemon listens on every pod address at the containerPort the kubelet probes
    (/healthz live, /readyz ready) and Prometheus scrapes."""
    for b in (b for b in _containers(source, request) if b.command == "run"):
        address = urlsplit("//" + b.config["http"]["address"])
        assert address.hostname == "0.0.0.0", f"{b.where}: probes come from the pod IP"
        ports = {p["name"]: p["containerPort"] for p in b.container["ports"]}
        assert ports["http-metrics"] == address.port, b.where
        assert b.container["livenessProbe"]["httpGet"] == {"path": "/healthz",
                                                           "port": "http-metrics"}
        assert b.container["readinessProbe"]["httpGet"] == {"path": "/readyz",
                                                            "port": "http-metrics"}


@pytest.mark.parametrize("source", SOURCES)
def test_pod_scrape_annotations_point_at_metrics(
        source: str, request: pytest.FixtureRequest) -> None:
    docs = _docs(source, request)
    for workload in (d for d in docs if d["kind"] in {"DaemonSet", "Deployment"}):
        annotations = workload["spec"]["template"]["metadata"].get("annotations", {})
        if source == "chart:all-off":
            assert "prometheus.io/scrape" not in annotations
            continue
        bridge = next(b for b in bridge_containers(source, [workload, *docs])
                      if b.command == "run")
        assert annotations["prometheus.io/scrape"] == "true"
        assert annotations["prometheus.io/path"] == "/metrics"
        assert annotations["prometheus.io/port"] == str(
            urlsplit("//" + bridge.config["http"]["address"]).port)
