#!/usr/bin/env bash
# Installs Debian's `faketime` package (libfaketime) for the host-clock fault tests
# (tests/integration/reliability/test_host_clock.py): the daemon process runs with its
# wall clock shifted. Idempotent: does nothing when the library is already there.
set -euo pipefail

if ls /usr/lib/*/faketime/libfaketime.so.1 >/dev/null 2>&1; then
  echo "libfaketime already installed: $(ls /usr/lib/*/faketime/libfaketime.so.1 | head -n 1)"
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "install-faketime.sh: needs root to apt-get install faketime" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -q >/dev/null || true  # a stale index is fine when the package is in it
apt-get install -y -q --no-install-recommends faketime >/dev/null
ls /usr/lib/*/faketime/libfaketime.so.1
