#!/usr/bin/env bash
# Azurite (npm `azurite`, Microsoft's Azure Storage emulator) for the Azure Blob test
# (tests/e2e/azure/test_azurite.py), into
#   ${XDG_CACHE_HOME:-$HOME/.cache}/spiffe-bridge/tools/azurite-$AZURITE_VERSION/
# Idempotent: a second run only checks the installed version. Without node/npm it is
# skipped with a note (the test then skips), or fails under CI=true.
set -euo pipefail
AZURITE_VERSION="${AZURITE_VERSION:-3.37.0}"
DEST="${XDG_CACHE_HOME:-$HOME/.cache}/spiffe-bridge/tools/azurite-$AZURITE_VERSION"
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  echo "install-azurite: node/npm not found: skipping azurite" >&2
  [ "${CI:-}" = "true" ] && exit 1
  exit 0
fi
bin="$DEST/node_modules/.bin/azurite-blob"
if [ -x "$bin" ] && [ "$(cd "$DEST" && node -p 'require("azurite/package.json").version')" = "$AZURITE_VERSION" ]; then
  echo "azurite up to date: $bin"
  exit 0
fi
rm -rf "$DEST" && mkdir -p "$DEST"
(cd "$DEST" && npm init -y >/dev/null && \
  npm install --omit=dev --no-audit --no-fund --loglevel=error "azurite@$AZURITE_VERSION")
echo "installed $bin"
