"""deploy/kubernetes: the objects reference each other consistently (selectors, names,
namespaces), the hostPath DaemonSet differs from the CSI one only in its volume, the sidecar
example starts in the right order, and the registrations give the SPIFFE IDs the configs
ask for."""

from __future__ import annotations

import configparser
import copy

import yaml

from tests.support.deploy import (
    ALERT_JOB,
    ALERTS,
    Doc,
    bridge_containers,
    one,
    pod_spec,
)

TRUST_DOMAIN = "example.org"


def _spiffe_id(template: str, namespace: str, service_account: str) -> str:
    return (template.replace("{{ .TrustDomain }}", TRUST_DOMAIN)
            .replace("{{ .PodMeta.Namespace }}", namespace)
            .replace("{{ .PodSpec.ServiceAccountName }}", service_account))


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return selector.items() <= labels.items()


def test_node_level_objects_share_one_namespace_and_service_account(
        manifests: dict[str, list[Doc]]) -> None:
    namespace = one(manifests["namespace.yaml"], "Namespace")
    name = namespace["metadata"]["name"]
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    for file in ("serviceaccount.yaml", "configmap.yaml", "daemonset.yaml",
                 "daemonset-hostpath.yaml", "service.yaml", "servicemonitor.yaml",
                 "networkpolicy.yaml"):
        for d in manifests[file]:
            assert d["metadata"]["namespace"] == name, file
    account = one(manifests["serviceaccount.yaml"], "ServiceAccount")
    assert account["automountServiceAccountToken"] is False
    for file in ("daemonset.yaml", "daemonset-hostpath.yaml"):
        pod = pod_spec(one(manifests[file], "DaemonSet"))
        assert pod["serviceAccountName"] == account["metadata"]["name"]
        config = next(v for v in pod["volumes"] if v["name"] == "config")
        assert config["configMap"]["name"] == (
            one(manifests["configmap.yaml"], "ConfigMap")["metadata"]["name"])


def test_daemonset_uses_the_csi_driver_and_the_variant_only_swaps_the_volume(
        manifests: dict[str, list[Doc]]) -> None:
    """Restricted PSS forbids hostPath: the default DaemonSet has none; the hostPath file
    is the same object with the agent socket volume replaced, nothing else."""
    csi = one(manifests["daemonset.yaml"], "DaemonSet")
    host = one(manifests["daemonset-hostpath.yaml"], "DaemonSet")
    assert all("hostPath" not in v for v in pod_spec(csi)["volumes"])
    swapped = copy.deepcopy(host)
    for volume in pod_spec(swapped)["volumes"]:
        if "hostPath" in volume:
            assert volume["hostPath"] == {"path": "/run/spire/agent-sockets",
                                          "type": "Directory"}
            del volume["hostPath"]
            volume["csi"] = {"driver": "csi.spiffe.io", "readOnly": True}
    assert swapped == csi


def test_service_monitor_scrapes_the_daemonset_as_the_alerts_job(
        manifests: dict[str, list[Doc]]) -> None:
    """ServiceMonitor -> Service -> DaemonSet pods; jobLabel makes job="spiffe-bridge",
    the job the alert SpiffeBridgeDown selects."""
    monitor = one(manifests["servicemonitor.yaml"], "ServiceMonitor")
    service = one(manifests["service.yaml"], "Service")
    pod = one(manifests["daemonset.yaml"], "DaemonSet")["spec"]["template"]
    assert _selects(monitor["spec"]["selector"]["matchLabels"], service["metadata"]["labels"])
    assert _selects(service["spec"]["selector"], pod["metadata"]["labels"])
    assert service["spec"]["clusterIP"] == "None"
    (endpoint,) = monitor["spec"]["endpoints"]
    (port,) = service["spec"]["ports"]
    assert endpoint["port"] == port["name"]
    assert port["targetPort"] in {p["name"] for p in pod["spec"]["containers"][0]["ports"]}
    assert service["metadata"]["labels"][monitor["spec"]["jobLabel"]] == ALERT_JOB
    assert f'job="{ALERT_JOB}"' in ALERTS.read_text()


def test_cluster_spiffe_ids_select_the_bridge_pods(manifests: dict[str, list[Doc]]) -> None:
    """Each registration selects its pods, and gives the sidecar the spiffe_id its config
    asks the agent for."""
    node, sidecars = manifests["clusterspiffeid.yaml"]
    ds = one(manifests["daemonset.yaml"], "DaemonSet")
    assert _selects(node["spec"]["podSelector"]["matchLabels"],
                    ds["spec"]["template"]["metadata"]["labels"])
    assert node["spec"]["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": ds["metadata"]["namespace"]}

    docs = manifests["sidecar-example.yaml"]
    deployment = one(docs, "Deployment")
    pod = deployment["spec"]["template"]
    assert _selects(sidecars["spec"]["podSelector"]["matchLabels"], pod["metadata"]["labels"])
    expected = _spiffe_id(sidecars["spec"]["spiffeIDTemplate"],
                          deployment["metadata"]["namespace"], pod["spec"]["serviceAccountName"])
    assert expected == f"spiffe://{TRUST_DOMAIN}/ns/etl/sa/loader"
    for bridge in bridge_containers("sidecar", docs):
        assert [t["spiffe_id"] for t in bridge.config["targets"]] == [expected]
    one(docs, "ServiceAccount", pod["spec"]["serviceAccountName"])


def test_sidecar_gets_credentials_before_the_app_starts(
        manifests: dict[str, list[Doc]]) -> None:
    """init `once` (exits 0 only when every target delivered), then the native sidecar
    `run` (restartPolicy Always, startupProbe on /readyz), then the app."""
    pod = pod_spec(one(manifests["sidecar-example.yaml"], "Deployment"))
    first, sidecar = pod["initContainers"]
    assert first["args"][:3] == ["once", "--config", "/etc/spiffe-bridge/config.yaml"]
    assert "restartPolicy" not in first
    assert sidecar["args"][:3] == ["run", "--config", "/etc/spiffe-bridge/config.yaml"]
    assert sidecar["restartPolicy"] == "Always"
    assert sidecar["startupProbe"]["httpGet"]["path"] == "/readyz"
    assert first["volumeMounts"] == sidecar["volumeMounts"]
    assert first["image"] == sidecar["image"]


def test_sidecar_app_reads_the_shared_credentials(manifests: dict[str, list[Doc]]) -> None:
    """The app mounts the bridge's memory emptyDir read-only, runs as the bridge's user
    (files are 0600), and its credential_process reads a file the bridge writes."""
    docs = manifests["sidecar-example.yaml"]
    pod = pod_spec(one(docs, "Deployment"))
    (app,) = pod["containers"]
    (bridge,) = [b for b in bridge_containers("sidecar", docs) if b.command == "run"]
    outputs = bridge.config["outputs"]["directory"]
    bridge_mount, volume = bridge.mount(outputs)
    app_mount = next(m for m in app["volumeMounts"] if m["name"] == volume["name"])
    assert app_mount["readOnly"] is True
    assert app_mount["mountPath"] == bridge_mount["mountPath"]
    assert "runAsUser" not in app["securityContext"]
    assert pod["securityContext"]["runAsUser"] > 0

    env = {e["name"]: e["value"] for e in app["env"]}
    config_mount = next(m for m in app["volumeMounts"]
                        if env["AWS_CONFIG_FILE"].startswith(m["mountPath"] + "/"))
    config_volume = next(v for v in pod["volumes"] if v["name"] == config_mount["name"])
    (item,) = config_volume["configMap"]["items"]
    assert env["AWS_CONFIG_FILE"] == f"{config_mount['mountPath']}/{item['path']}"
    aws_config = configparser.ConfigParser()
    aws_config.read_string(one(docs, "ConfigMap")["data"][item["key"]])
    profile = aws_config[f"profile {env['AWS_PROFILE']}"]
    aws_targets = [t["name"] for t in bridge.config["targets"] if "aws" in t]
    assert profile["credential_process"] == (
        f"cat {outputs}/aws/{env['AWS_PROFILE']}.json")
    assert env["AWS_PROFILE"] in aws_targets


def test_every_file_parses_to_kubernetes_objects(manifests: dict[str, list[Doc]]) -> None:
    for name, docs in manifests.items():
        assert docs, name
        for d in docs:
            assert {"apiVersion", "kind", "metadata"} <= d.keys(), name
    # The raw ConfigMap holds a YAML mapping, not a string that merely looks like one.
    config = one(manifests["configmap.yaml"], "ConfigMap")["data"]["config.yaml"]
    assert isinstance(yaml.safe_load(config), dict)


def test_network_policy_admits_only_the_metrics_port_of_the_bridge_pods(
        manifests: dict[str, list[Doc]]) -> None:
    """Issue 13 item 5: the health server listens on the pod address; the shipped
    policy selects the DaemonSet's pods and admits only their metrics port."""
    policy = one(manifests["networkpolicy.yaml"], "NetworkPolicy")["spec"]
    for file in ("daemonset.yaml", "daemonset-hostpath.yaml"):
        template = one(manifests[file], "DaemonSet")["spec"]["template"]
        assert _selects(policy["podSelector"]["matchLabels"], template["metadata"]["labels"])
        ports = {p["name"] for c in template["spec"]["containers"] for p in c.get("ports", [])}
        assert "http-metrics" in ports
    assert policy["policyTypes"] == ["Ingress"]
    (rule,) = policy["ingress"]
    assert rule["ports"] == [{"port": "http-metrics", "protocol": "TCP"}]
    assert rule["from"], "an ingress rule without `from` admits every pod"


def test_broker_daemonset_shares_the_pid_namespace_in_a_namespace_that_allows_it(
        manifests: dict[str, list[Doc]]) -> None:
    """hostPID is forbidden by the baseline and restricted standards: the broker-mode
    DaemonSet lives in a namespace labelled privileged, and is otherwise as locked down
    as the default one (non-root, read-only root, no capabilities)."""
    docs = manifests["daemonset-broker.yaml"]
    namespace = one(docs, "Namespace")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "privileged"
    pod = pod_spec(one(docs, "DaemonSet"))
    assert pod["hostPID"] is True
    assert pod["securityContext"]["runAsNonRoot"] is True
    (container,) = pod["containers"]
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert mounts["/spiffe-broker"]["readOnly"] is True
    config = yaml.safe_load(one(docs, "ConfigMap")["data"]["config.yaml"])
    assert config["broker"]["socket"] == "unix:///spiffe-broker/broker.sock"
    assert config["workloads"]["grpc_socket"].startswith("unix:///run/spiffe-bridge-workloads/")
    assert "hostPID" not in pod_spec(one(manifests["daemonset.yaml"], "DaemonSet"))
