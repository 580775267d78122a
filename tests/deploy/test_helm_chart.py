"""The Helm chart: lints, renders the objects each switch asks for, refuses bad values, and
its monitoring objects agree with deploy/prometheus/alerts.yaml."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import yaml

from tests.support.deploy import (
    ALERT_JOB,
    ALERTS,
    CHART,
    NAMESPACE,
    RENDERINGS,
    VALUES,
    Doc,
    helm,
    kinds,
    one,
    pod_spec,
    render_chart,
    run,
)

RUNBOOK = "deploy/prometheus/RUNBOOK.md"


def _alert_groups() -> list[Doc]:
    groups: list[Doc] = yaml.safe_load(ALERTS.read_text())["groups"]
    return groups


@pytest.mark.parametrize("rendering", sorted(RENDERINGS))
def test_helm_lint_strict_passes(rendering: str) -> None:
    """`helm lint --strict` with the default values and with each toggle file."""
    values = [a for v in RENDERINGS[rendering] for a in ("--values", str(v))]
    proc = run([helm(), "lint", "--strict", str(CHART), *values])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 chart(s) failed" in proc.stdout


def test_each_rendering_has_the_objects_its_switches_ask_for(
        rendered: dict[str, list[Doc]]) -> None:
    assert kinds(rendered["default"]) == ["ConfigMap", "DaemonSet", "Service", "ServiceAccount"]
    assert kinds(rendered["all-on"]) == [
        "ClusterSPIFFEID", "ConfigMap", "DaemonSet", "NetworkPolicy", "PrometheusRule",
        "Service", "ServiceAccount", "ServiceMonitor"]
    assert kinds(rendered["all-off"]) == ["ConfigMap", "DaemonSet"]
    for docs in rendered.values():
        for d in docs:
            if d["kind"] != "ClusterSPIFFEID":  # cluster-scoped
                assert d["metadata"]["namespace"] == NAMESPACE, d["metadata"]


def test_all_off_uses_the_existing_service_account_and_hostpath(
        rendered: dict[str, list[Doc]]) -> None:
    pod = pod_spec(one(rendered["all-off"], "DaemonSet"))
    assert pod["serviceAccountName"] == "existing-bridge"
    volume = next(v for v in pod["volumes"] if v["name"] == "spiffe-workload-api")
    assert volume == {"name": "spiffe-workload-api",
                      "hostPath": {"path": "/run/spire/sockets", "type": "Directory"}}
    annotations = one(rendered["all-off"], "DaemonSet")["spec"]["template"]["metadata"].get(
        "annotations", {})
    assert not any(k.startswith("prometheus.io/") for k in annotations)


def test_image_reference_follows_tag_and_digest(rendered: dict[str, list[Doc]]) -> None:
    """Default: repository:appVersion. With a digest the image is pulled by digest."""
    app_version = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]
    default = pod_spec(one(rendered["default"], "DaemonSet"))["containers"][0]
    assert default["image"] == f"registry.example.org/spiffe-bridge:{app_version}"
    pinned = pod_spec(one(rendered["all-on"], "DaemonSet"))["containers"][0]
    assert re.fullmatch(r"registry\.example\.org/platform/spiffe-bridge@sha256:[0-9a-f]{64}",
                        pinned["image"])
    assert pinned["imagePullPolicy"] == "Always"


def test_config_checksum_rolls_the_pods_when_the_config_changes() -> None:
    def checksum(*extra: str) -> str:
        ds = one(render_chart(extra=extra), "DaemonSet")
        value: str = ds["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
        return value
    assert checksum() == checksum()
    assert checksum() != checksum("--set", "refresh.concurrency=4")


@pytest.mark.parametrize(("args", "message"), [
    (["--set", "mode=sidecar"], "mode"),
    (["--set", "serviceMonitr.enabled=true"], "serviceMonitr"),
    (["--set", "workloadApi.volume=nfs"], "volume"),
    (["--set-json", "targets=[]"], "targets"),
    (["--set", "runAsUser=0"], "runAsUser"),
    (["--set", "serviceMonitor.enabled=true", "--set", "metrics.service.enabled=false"],
     "metrics.service.enabled"),
])
def test_bad_values_are_refused(args: list[str], message: str) -> None:
    """values.schema.json and the templates' checks turn mistakes into errors."""
    proc = run([helm(), "template", "rel", str(CHART), *args])
    assert proc.returncode != 0, proc.stdout
    assert message in proc.stderr


def test_alert_rules_have_one_source() -> None:
    """The chart reads deploy/prometheus/alerts.yaml through a link, not a copy."""
    linked = CHART / "files" / "alerts.yaml"
    assert linked.is_symlink()
    assert linked.resolve() == ALERTS.resolve()


def test_prometheus_rule_carries_the_alert_rules_unchanged() -> None:
    docs = render_chart(extra=["--set", "prometheusRule.enabled=true"])
    rule = one(docs, "PrometheusRule")
    assert rule["spec"]["groups"] == _alert_groups()


def test_prometheus_rule_points_runbook_urls_at_the_published_runbook(
        rendered: dict[str, list[Doc]]) -> None:
    """all-on sets runbookBaseUrl: only runbook_url changes, everything else is equal."""
    base = "https://runbooks.example.org/spiffe-bridge/RUNBOOK.md"
    expected = yaml.safe_load(yaml.safe_dump(_alert_groups()).replace(RUNBOOK, base))
    rule = one(rendered["all-on"], "PrometheusRule")
    assert rule["spec"]["groups"] == expected
    urls = [r["annotations"]["runbook_url"] for g in rule["spec"]["groups"]
            for r in g["rules"] if "alert" in r]
    assert urls
    assert all(u.startswith(base + "#") for u in urls)
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"


def test_service_monitor_scrapes_the_bridge_pods_as_the_alerts_job(
        rendered: dict[str, list[Doc]]) -> None:
    """ServiceMonitor -> Service -> DaemonSet pods, and the job is the one alerts select."""
    docs = rendered["all-on"]
    monitor, service = one(docs, "ServiceMonitor"), one(docs, "Service")
    pod_labels = one(docs, "DaemonSet")["spec"]["template"]["metadata"]["labels"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= (
        service["metadata"]["labels"].items())
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert monitor["spec"]["namespaceSelector"]["matchNames"] == [NAMESPACE]
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert {"action": "replace", "targetLabel": "job", "replacement": ALERT_JOB} in (
        endpoint["relabelings"])
    down = next(r for g in _alert_groups() for r in g["rules"]
                if r.get("alert") == "SpiffeBridgeDown")
    assert f'job="{ALERT_JOB}"' in down["expr"]


def test_cluster_spiffe_id_selects_the_bridge_pods(rendered: dict[str, list[Doc]]) -> None:
    """The registration matches the DaemonSet's pods, and the SPIFFE ID it gives them is
    the spiffe_id the all-on config asks the agent for."""
    docs = rendered["all-on"]
    entry = one(docs, "ClusterSPIFFEID")["spec"]
    pod = one(docs, "DaemonSet")["spec"]["template"]
    assert entry["podSelector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    assert entry["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": NAMESPACE}
    spiffe_id = (entry["spiffeIDTemplate"]
                 .replace("{{ .TrustDomain }}", "example.org")
                 .replace("{{ .PodMeta.Namespace }}", NAMESPACE)
                 .replace("{{ .PodSpec.ServiceAccountName }}", pod["spec"]["serviceAccountName"]))
    config = yaml.safe_load(one(docs, "ConfigMap")["data"]["config.yaml"])
    assert spiffe_id == config["targets"][0]["spiffe_id"]
    assert entry["jwtTtl"] == "10m"


def test_packaged_chart_carries_the_rules_file(tmp_path: Path) -> None:
    """`helm package` stores the linked file's content: the packaged chart renders the
    same rules."""
    proc = run([helm(), "package", str(CHART), "--destination", str(tmp_path)])
    assert proc.returncode == 0, proc.stderr
    (package,) = tmp_path.glob("spiffe-bridge-*.tgz")
    proc = run([helm(), "template", "rel", str(package), "--set", "prometheusRule.enabled=true"])
    assert proc.returncode == 0, proc.stderr
    rule = one(yaml.safe_load_all(proc.stdout), "PrometheusRule")
    assert rule["spec"]["groups"] == _alert_groups()


@pytest.mark.parametrize("rendering", sorted(RENDERINGS))
def test_notes_render(rendering: str, tmp_path: Path) -> None:
    """NOTES.txt is only rendered at install time; render a copy as a normal template."""
    chart = tmp_path / "spiffe-bridge"
    shutil.copytree(CHART, chart)  # follows the link: files/alerts.yaml becomes a copy
    shutil.copy(chart / "templates" / "NOTES.txt", chart / "files" / "notes.txt")
    (chart / "templates" / "notes-copy.yaml").write_text(
        'notes: {{ tpl (.Files.Get "files/notes.txt") . | toJson }}\n')
    values = [a for v in RENDERINGS[rendering] for a in ("--values", str(v))]
    proc = run([helm(), "template", "rel", str(chart), "--namespace", NAMESPACE, *values,
                "--show-only", "templates/notes-copy.yaml"])
    assert proc.returncode == 0, proc.stderr
    notes = yaml.safe_load(proc.stdout)["notes"]
    assert "<no value>" not in notes
    assert f"kubectl -n {NAMESPACE} rollout status daemonset/" in notes
    values_doc = yaml.safe_load(RENDERINGS[rendering][0].read_text()) if (
        RENDERINGS[rendering]) else yaml.safe_load((CHART / "values.yaml").read_text())
    for target in values_doc["targets"]:
        assert target["name"] in notes


def test_network_policy_admits_only_the_metrics_port_from_the_given_peers(
        rendered: dict[str, list[Doc]]) -> None:
    """Issue 13 item 5: the optional policy selects the bridge pods, admits only their
    metrics port, only from `networkPolicy.metricsFrom`; off by default."""
    values = yaml.safe_load(RENDERINGS["all-on"][0].read_text())
    policy = one(rendered["all-on"], "NetworkPolicy")["spec"]
    template = one(rendered["all-on"], "DaemonSet")["spec"]["template"]
    assert policy["podSelector"]["matchLabels"].items() <= template["metadata"]["labels"].items()
    assert policy["policyTypes"] == ["Ingress"]
    (rule,) = policy["ingress"]
    ports = {p["name"] for c in template["spec"]["containers"] for p in c.get("ports", [])}
    assert [p["port"] for p in rule["ports"]] == ["http-metrics"]
    assert "http-metrics" in ports
    assert rule["from"] == values["networkPolicy"]["metricsFrom"]
    assert "NetworkPolicy" not in kinds(rendered["default"])


def test_broker_mode_shares_the_pid_namespace_and_mounts_both_sockets(
        rendered: dict[str, list[Doc]]) -> None:
    """Broker mode: hostPID (callers' PIDs), the agent's broker socket directory read-only
    and the workload socket directory, still non-root with no capabilities; the config
    names the broker, the workload socket and the rules. Other renderings have none of it."""
    pod = pod_spec(one(rendered["broker"], "DaemonSet"))
    assert pod["hostPID"] is True
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["spire-broker"]["hostPath"] == {"path": "/run/spire/broker-sockets",
                                                   "type": "Directory"}
    assert volumes["workload-socket"]["hostPath"]["path"] == "/run/spiffe-bridge-workloads"
    (container,) = pod["containers"]
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert mounts["spire-broker"] == {"name": "spire-broker", "mountPath": "/spiffe-broker",
                                      "readOnly": True}
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert pod["securityContext"]["runAsNonRoot"] is True
    config = yaml.safe_load(one(rendered["broker"], "ConfigMap")["data"]["config.yaml"])
    assert config["broker"]["socket"] == "unix:///spiffe-broker/broker.sock"
    assert config["workloads"]["grpc_socket"] == (
        "unix:///run/spiffe-bridge-workloads/workload.sock")
    assert [r["name"] for r in config["workload_targets"]] == ["ns-sa-aws"]
    for name in ("default", "all-on", "all-off"):
        assert "hostPID" not in pod_spec(one(rendered[name], "DaemonSet"))


def test_broker_mode_needs_its_ids() -> None:
    with pytest.raises(AssertionError, match=r"broker\.agentId is required"):
        render_chart(VALUES / "broker.yaml", extra=["--set", "broker.agentId="])
