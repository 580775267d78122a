#!/usr/bin/env bash
# Installs what tests/deploy needs, into versioned folders of a cache directory, and
# reuses them when present (idempotent; a second run only checks):
#   helm-<v>/bin/helm              helm v3, built with `go install` from the Go module proxy
#   kubernetes-validate-<v>/       a venv with kubernetes-validate from PyPI: the Kubernetes
#                                  JSON schemas, bundled, so validation works offline
#   crds/                          the CRDs (openAPIV3Schema) of ServiceMonitor, PrometheusRule
#                                  (prometheus-operator) and ClusterSPIFFEID
#                                  (spire-controller-manager), from those Go modules' source
#   systemd-analyze                Debian's `systemd` package when the command is missing
#                                  (needs root; CI is root)
# The cache is ${SPIFFE_BRIDGE_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/spiffe-bridge/tools};
# tests/deploy/_tools.py looks in the same place. Needs: go, python3 (both on the machine).
set -euo pipefail

HELM_VERSION=v3.22.0
KUBERNETES_VALIDATE_VERSION=1.37.0
PROMETHEUS_OPERATOR_VERSION=v0.85.0
SPIRE_CONTROLLER_MANAGER_VERSION=v0.7.0

TOOLS="${SPIFFE_BRIDGE_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/spiffe-bridge/tools}"
mkdir -p "$TOOLS"
installed=()
reused=()

# -- helm ---------------------------------------------------------------------------------
helm_dir="$TOOLS/helm-$HELM_VERSION"
if [ -x "$helm_dir/bin/helm" ] && "$helm_dir/bin/helm" version >/dev/null 2>&1; then
  reused+=("helm $HELM_VERSION ($helm_dir/bin/helm)")
else
  command -v go >/dev/null || { echo "install-deploy-tools.sh: go is needed to build helm" >&2; exit 1; }
  mkdir -p "$helm_dir/bin"
  # Outside any module, so no go.mod/go.work of the caller's interferes.
  (cd / && GOWORK=off GOFLAGS=-mod=mod GOBIN="$helm_dir/bin" \
     go install "helm.sh/helm/v3/cmd/helm@$HELM_VERSION")
  "$helm_dir/bin/helm" version >/dev/null
  installed+=("helm $HELM_VERSION ($helm_dir/bin/helm)")
fi

# -- kubernetes-validate ------------------------------------------------------------------
kv_dir="$TOOLS/kubernetes-validate-$KUBERNETES_VALIDATE_VERSION"
if [ -x "$kv_dir/bin/python" ] && "$kv_dir/bin/python" -c "import kubernetes_validate, jsonschema, yaml" 2>/dev/null; then
  reused+=("kubernetes-validate $KUBERNETES_VALIDATE_VERSION ($kv_dir)")
else
  rm -rf "$kv_dir"
  python3 -m venv "$kv_dir"
  "$kv_dir/bin/pip" install -q --disable-pip-version-check --no-cache-dir \
    "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION" jsonschema pyyaml
  "$kv_dir/bin/python" -c "import kubernetes_validate, jsonschema, yaml"
  installed+=("kubernetes-validate $KUBERNETES_VALIDATE_VERSION ($kv_dir)")
fi

# -- CRDs from the operators' Go modules --------------------------------------------------
crd_dir="$TOOLS/crds"
mkdir -p "$crd_dir"
module_dir() {  # the unpacked source of a module version, via the Go module proxy
  (cd / && GOWORK=off GOFLAGS=-mod=mod go mod download -json "$1") |
    python3 -c 'import json, sys; d = json.load(sys.stdin); print(d.get("Dir") or sys.exit(d.get("Error", "no Dir")))'
}
fetch_crd() {  # fetch_crd MODULE VERSION PATH-IN-MODULE
  local name target
  name="$(basename "$3" .yaml)"
  target="$crd_dir/$name-$2.yaml"
  if [ -s "$target" ]; then
    reused+=("CRD $name ($1@$2)")
    return
  fi
  command -v go >/dev/null || { echo "install-deploy-tools.sh: go is needed for the CRDs" >&2; exit 1; }
  local dir
  dir="$(module_dir "$1@$2")"
  install -m 0644 "$dir/$3" "$target.tmp"
  mv "$target.tmp" "$target"
  installed+=("CRD $name ($1@$2)")
}
fetch_crd github.com/prometheus-operator/prometheus-operator "$PROMETHEUS_OPERATOR_VERSION" \
  example/prometheus-operator-crd/monitoring.coreos.com_servicemonitors.yaml
fetch_crd github.com/prometheus-operator/prometheus-operator "$PROMETHEUS_OPERATOR_VERSION" \
  example/prometheus-operator-crd/monitoring.coreos.com_prometheusrules.yaml
fetch_crd github.com/spiffe/spire-controller-manager "$SPIRE_CONTROLLER_MANAGER_VERSION" \
  config/crd/bases/spire.spiffe.io_clusterspiffeids.yaml

# -- systemd-analyze ----------------------------------------------------------------------
if command -v systemd-analyze >/dev/null 2>&1; then
  reused+=("systemd-analyze ($(systemd-analyze --version | head -n 1))")
else
  if [ "$(id -u)" -ne 0 ]; then
    echo "install-deploy-tools.sh: needs root to apt-get install systemd (systemd-analyze)" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq </dev/null
  apt-get install -y -qq --no-install-recommends systemd </dev/null >/dev/null
  installed+=("systemd-analyze ($(systemd-analyze --version | head -n 1))")
fi

for item in ${installed[@]+"${installed[@]}"}; do echo "installed: $item"; done
for item in ${reused[@]+"${reused[@]}"}; do echo "already present: $item"; done
echo "deploy tools in $TOOLS"
