#!/usr/bin/env bash
# Installs Debian's `prometheus` package (prometheus + promtool) for the observability
# integration tests. Idempotent: does nothing when both tools are already on PATH.
# Runs as root with no stdin (CI). The package's maintainer scripts would start a
# Prometheus service on :9090; a temporary policy-rc.d forbids that, and any server the
# install started anyway is stopped, so the tests' own Prometheus is the only one.
set -euo pipefail

if command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1; then
  echo "prometheus already installed: $(prometheus --version 2>&1 | head -n 1)"
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  echo "install-prometheus.sh: needs root to apt-get install prometheus" >&2
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive
policy=/usr/sbin/policy-rc.d
created_policy=0
if [ ! -e "$policy" ]; then
  # 101: "action forbidden by policy", read by invoke-rc.d and deb-systemd-invoke.
  printf '#!/bin/sh\nexit 101\n' >"$policy"
  chmod 0755 "$policy"
  created_policy=1
fi
cleanup() {
  if [ "$created_policy" -eq 1 ]; then rm -f "$policy"; fi
}
trap cleanup EXIT

apt-get update -qq </dev/null
# --no-install-recommends: no prometheus-node-exporter (it would want :9100).
apt-get install -y -qq --no-install-recommends prometheus </dev/null >/dev/null

# Belt and braces: stop a server a maintainer script may have started despite the policy
# (only the packaged one, found by its binary path, never anything else).
if command -v pgrep >/dev/null 2>&1; then
  for pid in $(pgrep -x prometheus || true); do
    if [ "$(readlink -f "/proc/$pid/exe" 2>/dev/null)" = "/usr/bin/prometheus" ] \
       && [ "$(stat -c %U "/proc/$pid" 2>/dev/null)" = "prometheus" ]; then
      kill "$pid" || true
    fi
  done
fi

command -v prometheus >/dev/null && command -v promtool >/dev/null
echo "installed: $(prometheus --version 2>&1 | head -n 1)"
