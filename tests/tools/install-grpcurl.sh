#!/usr/bin/env bash
# Builds grpcurl (a third-party gRPC client that knows our API only through server
# reflection) from the Go module proxy into
#   ${XDG_CACHE_HOME:-$HOME/.cache}/spiffe-bridge/tools/grpcurl/bin
# for tests/integration/grpc_api. Idempotent: reuses the binary when present.
set -euo pipefail
VERSION="${GRPCURL_VERSION:-v1.9.3}"
BIN="${XDG_CACHE_HOME:-$HOME/.cache}/spiffe-bridge/tools/grpcurl/bin"
if [ -x "$BIN/grpcurl" ]; then
  echo "grpcurl already built, reusing $BIN/grpcurl ($("$BIN/grpcurl" -version 2>&1))"
  exit 0
fi
command -v go >/dev/null 2>&1 || PATH="/usr/local/go/bin:$PATH"
mkdir -p "$BIN"
GOBIN="$BIN" go install "github.com/fullstorydev/grpcurl/cmd/grpcurl@${VERSION}"
echo "built $BIN/grpcurl ($("$BIN/grpcurl" -version 2>&1))"
