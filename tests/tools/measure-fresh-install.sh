#!/usr/bin/env bash
# Measures what .ci/run's installers cost on a fresh machine: runs each one with every
# cache it fills (tool dir, Go module and build caches, npm, pip, Maven) pointed into an
# empty scratch directory, and prints seconds and `du -sh` per installer and in all.
# Debian packages (prometheus, systemd) are not re-installed: apt is left as it is.
#   bash tests/tools/measure-fresh-install.sh [SCRATCH]   (default: a new dir under /var/tmp)
# SCRATCH is removed at the end unless KEEP=1.
set -euo pipefail
cd "$(dirname "$0")/../.."
S="${1:-$(mktemp -d /var/tmp/sb-fresh-install.XXXXXX)}"
mkdir -p "$S"
export XDG_CACHE_HOME="$S/cache" GOMODCACHE="$S/gomod" GOCACHE="$S/gobuild" GOPATH="$S/gopath" \
       npm_config_cache="$S/npm" PIP_CACHE_DIR="$S/pip" MAVEN_OPTS="-Dmaven.repo.local=$S/m2"
command -v go >/dev/null 2>&1 || PATH="/usr/local/go/bin:$PATH"
total_start=$(date +%s)
for script in install-grpcurl install-deploy-tools install-spire install-consumers; do
  start=$(date +%s)
  bash "tests/tools/$script.sh" >"$S/$script.log" 2>&1 || { echo "$script failed: $S/$script.log"; exit 1; }
  echo "$script: $(( $(date +%s) - start )) s, $(du -sh "$S" | cut -f1) in all so far"
done
echo "all: $(( $(date +%s) - total_start )) s"
du -sh "$S"/* 2>/dev/null | sort -h
if [ "${KEEP:-}" != 1 ]; then
  chmod -R u+w "$S" && rm -rf "$S"
fi
