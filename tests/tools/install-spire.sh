#!/usr/bin/env bash
# Builds SPIRE's spire-server, spire-agent and oidc-discovery-provider from the Go module
# proxy for the real-SPIRE integration tests (tests/integration/spire), into
#   ${XDG_CACHE_HOME:-$HOME/.cache}/spiffe-bridge/tools/spire-v$VERSION/bin
# Idempotent: reuses the binaries when all three are there; waits for a build of the same
# directory already under way (a lock) instead of starting a second one. Prints what it did.
#
# `go install github.com/spiffe/spire/cmd/spire-server@v1.15.3` (and the two others) is
# tried first. The module proxy this project reaches refuses some things the normal way
# needs (HTTP 403 "This module version is not available"):
#  - the version *list* of github.com/spiffe/spire, which `go install pkg@version` reads to
#    look up the module's deprecation notice (the version itself is served);
#  - github.com/Keyfactor/ejbca-go-client-sdk v1.1.0, needed only by SPIRE's EJBCA
#    UpstreamAuthority plugin (v1.0.2 is served and compiles against it).
# Then the script fetches the module with `go mod download` (exact version: no list),
# copies it to $DIR/src, adds `replace` lines for the refused dependencies only if they
# really are refused (recorded in $DIR/REPLACED), and runs `go install` for the three
# packages there, as the main module. SPIRE v1.15.3 is one module without replace
# directives of its own, so apart from that one plugin dependency this is the same code,
# built with the same go.sum.
set -euo pipefail

VERSION="${SPIRE_VERSION:-1.15.3}"
MODULE=github.com/spiffe/spire
PKGS=(cmd/spire-server cmd/spire-agent support/oidc-discovery-provider)
BINS=(spire-server spire-agent oidc-discovery-provider)
# module@version the proxy may refuse => a replacement (see above); fallback path only.
FALLBACK_REPLACES=(
  "github.com/Keyfactor/ejbca-go-client-sdk@v1.1.0=github.com/Keyfactor/ejbca-go-client-sdk@v1.0.2"
)
DIR="${XDG_CACHE_HOME:-$HOME/.cache}/spiffe-bridge/tools/spire-v${VERSION}"
BIN="$DIR/bin"

have_all() {
  local b
  for b in "${BINS[@]}"; do [ -x "$BIN/$b" ] || return 1; done
}

report() {
  echo "spire v${VERSION} binaries in $BIN:"
  "$BIN/spire-server" --version 2>&1 | sed 's/^/  spire-server /'
  "$BIN/spire-agent" --version 2>&1 | sed 's/^/  spire-agent /'
  if [ -x "$BIN/oidc-discovery-provider" ]; then echo "  oidc-discovery-provider present"; fi
}

if have_all; then
  echo "spire already built, reusing it"
  report
  exit 0
fi

if ! command -v go >/dev/null 2>&1; then
  if [ -x /usr/local/go/bin/go ]; then
    PATH="/usr/local/go/bin:$PATH"
  else
    echo "install-spire.sh: needs the Go toolchain (go) on PATH" >&2
    exit 1
  fi
fi

mkdir -p "$BIN"
exec 9>"$DIR/.build.lock"
if ! flock -n 9; then
  echo "another build of $BIN is under way; waiting for it"
  flock 9
fi
if have_all; then
  echo "spire built by the other run, reusing it"
  report
  exit 0
fi

# A bare `go install github.com/spiffe/spire/...@vX` started by hand (without our lock) may
# be writing into the same directory: wait for it rather than racing it.
waited=0
while pgrep -f "go install ${MODULE}/.*@v${VERSION}" >/dev/null 2>&1; do
  if [ "$waited" -eq 0 ]; then echo "a go install of spire v${VERSION} is running; waiting for it"; fi
  waited=1
  sleep 5
done
if have_all; then
  echo "spire built by the other go install, reusing it"
  report
  exit 0
fi

start=$(date +%s)
export GOBIN="$BIN"
export GOFLAGS="${GOFLAGS:-} -buildvcs=false"
echo "building spire v${VERSION} (${BINS[*]}) into $BIN; this takes several minutes"
targets=()
for p in "${PKGS[@]}"; do targets+=("${MODULE}/${p}@v${VERSION}"); done
if go install "${targets[@]}" 2>"$DIR/go-install.err"; then
  echo "built with go install ${MODULE}/...@v${VERSION}"
else
  sed 's/^/  /' "$DIR/go-install.err"
  echo "go install pkg@v${VERSION} failed (above); building inside the downloaded module instead"
  moddir=$(cd "$DIR" && go mod download -json "${MODULE}@v${VERSION}" \
    | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
  if [ -z "$moddir" ] || [ ! -f "$moddir/go.mod" ]; then
    echo "install-spire.sh: go mod download ${MODULE}@v${VERSION} gave no module directory" >&2
    exit 1
  fi
  echo "module source: $moddir"
  rm -rf "$DIR/src"
  cp -r "$moddir" "$DIR/src"
  chmod -R u+w "$DIR/src"
  : >"$DIR/REPLACED"
  for pair in "${FALLBACK_REPLACES[@]}"; do
    from="${pair%%=*}"; to="${pair#*=}"
    if ! (cd "$DIR/src" && go mod download "$from" >/dev/null 2>&1); then
      echo "dependency $from is not available from the module proxy; using $to"
      (cd "$DIR/src" && go mod edit -replace "${from%@*}=$to")
      echo "$from => $to" >>"$DIR/REPLACED"
    fi
  done
  rel=()
  for p in "${PKGS[@]}"; do rel+=("./${p}"); done
  # -mod=mod only lets go add the go.sum lines of a replacement (checked against the
  # checksum database as usual); every other requirement stays as SPIRE pinned it.
  (cd "$DIR/src" && GOFLAGS="-mod=mod -buildvcs=false" go install "${rel[@]}")
fi
rm -f "$DIR/go-install.err"
rm -rf "$DIR/src"   # the copy is only needed while building
have_all
echo "built in $(( $(date +%s) - start ))s"
report
