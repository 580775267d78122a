#!/usr/bin/env bash
# Builds SPIRE's spire-server, spire-agent and oidc-discovery-provider, upstream v1.15.3,
# from the Go module proxy for the real-SPIRE integration tests (tests/integration/spire),
# into
#   ${XDG_CACHE_HOME:-$HOME/.cache}/spiffe-bridge/tools/spire-v$VERSION/bin
# and says plainly what it built (also in $DIR/BUILD-INFO). The binaries are linked as
# SPIRE's own Makefile links a release (`-X .../pkg/common/version.gittag=1.15.3` and
# `githash`), so `spire-server --version` prints 1.15.3.
# Idempotent: reuses the binaries when all three are there and report that version;
# waits for a build of the same directory already under way (a lock) instead of starting
# a second one; new binaries are renamed into place, so a running SPIRE keeps its own.
#
# `go install github.com/spiffe/spire/cmd/spire-server@v1.15.3` (and the two others) is
# tried first. The module proxy this project reaches refuses two things that needs
# (HTTP 403 "This module version is not available"):
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
# module@version the proxy may refuse => a replacement | why; fallback path only.
FALLBACK_REPLACES=(
  "github.com/Keyfactor/ejbca-go-client-sdk@v1.1.0=github.com/Keyfactor/ejbca-go-client-sdk@v1.0.2|the module proxy here does not serve v1.1.0; only SPIRE's EJBCA UpstreamAuthority plugin uses it (the tests do not), and it compiles against v1.0.2"
)
DIR="${XDG_CACHE_HOME:-$HOME/.cache}/spiffe-bridge/tools/spire-v${VERSION}"
BIN="$DIR/bin"

reports_version() {  # reports_version BINARY: true when `BINARY --version` says $VERSION
  [ "$("$1" --version 2>&1 | tr -d '[:space:]')" = "$VERSION" ]
}
have_all() {
  local b
  for b in "${BINS[@]}"; do [ -x "$BIN/$b" ] || return 1; done
  reports_version "$BIN/spire-server" && reports_version "$BIN/spire-agent"
}

report() {
  if [ -f "$DIR/BUILD-INFO" ]; then cat "$DIR/BUILD-INFO"; fi
  echo "  spire-server --version: $("$BIN/spire-server" --version 2>&1 | tr -d '\n')"
  echo "  spire-agent --version: $("$BIN/spire-agent" --version 2>&1 | tr -d '\n')"
  echo "  oidc-discovery-provider: $([ -x "$BIN/oidc-discovery-provider" ] && echo present)"
}

if have_all; then
  echo "spire v${VERSION} already built, reusing it"
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
# The module as the proxy serves it: its directory and the upstream commit of the tag.
download=$(cd "$DIR" && go mod download -json "${MODULE}@v${VERSION}")
moddir=$(sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p' <<<"$download")
commit=$(sed -n 's/^[[:space:]]*"Hash": "\([0-9a-f]*\)",*$/\1/p' <<<"$download" | head -n1)
githash="${commit:0:7}"
ldflags="-s -w -X ${MODULE}/pkg/common/version.gittag=${VERSION}"
if [ -n "$githash" ]; then ldflags+=" -X ${MODULE}/pkg/common/version.githash=${githash}"; fi
NEW="$DIR/bin.new"
rm -rf "$NEW" && mkdir -p "$NEW"
export GOBIN="$NEW"
export GOFLAGS="${GOFLAGS:-} -buildvcs=false"
echo "building SPIRE v${VERSION} (${BINS[*]}) from upstream source${commit:+ (commit $githash)}; this takes several minutes"
targets=()
for p in "${PKGS[@]}"; do targets+=("${MODULE}/${p}@v${VERSION}"); done
none="none: every dependency as the go.sum of SPIRE v${VERSION} pins it"
pinned="$none"
how="go install ${MODULE}/{$(IFS=,; echo "${PKGS[*]}")}@v${VERSION}"
if go install -ldflags "$ldflags" "${targets[@]}" >"$DIR/go-install.log" 2>&1; then
  rm -f "$DIR/go-install.log" "$DIR/REPLACED"
else
  refused=$(grep -m1 -o '[^ ]*: reading [^ ]*: 403[^"]*' "$DIR/go-install.log" || true)
  echo "go install ...@v${VERSION} is not possible here: the module proxy refuses a request it makes${refused:+ ($refused)}"
  echo "  (full output: $DIR/go-install.log); building the same v${VERSION} source from \`go mod download\` instead"
  if [ -z "$moddir" ] || [ ! -f "$moddir/go.mod" ]; then
    echo "install-spire.sh: go mod download ${MODULE}@v${VERSION} gave no module directory" >&2
    exit 1
  fi
  rm -rf "$DIR/src"
  cp -r "$moddir" "$DIR/src"
  chmod -R u+w "$DIR/src"
  : >"$DIR/REPLACED"
  pinned=""
  for entry in "${FALLBACK_REPLACES[@]}"; do
    pair="${entry%%|*}"; why="${entry#*|}"
    from="${pair%%=*}"; to="${pair#*=}"
    if ! (cd "$DIR/src" && go mod download "$from" >/dev/null 2>&1); then
      (cd "$DIR/src" && go mod edit -replace "${from%@*}=$to")
      echo "$from => $to" >>"$DIR/REPLACED"
      pinned+=$'\n'"    ${from%@*} ${to##*@} instead of ${from##*@}: $why"
    fi
  done
  pinned="${pinned:-$none}"
  how="go install in a copy of the module (go mod download ${MODULE}@v${VERSION})"
  rel=()
  for p in "${PKGS[@]}"; do rel+=("./${p}"); done
  # -mod=mod only lets go add the go.sum lines of a replacement (checked against the
  # checksum database as usual); every other requirement stays as SPIRE pinned it.
  (cd "$DIR/src" && GOFLAGS="-mod=mod -buildvcs=false" go install -ldflags "$ldflags" "${rel[@]}")
  rm -rf "$DIR/src"   # the copy is only needed while building
fi
for b in "${BINS[@]}"; do mv -f "$NEW/$b" "$BIN/$b"; done  # a rename: running ones keep theirs
rmdir "$NEW"
cat >"$DIR/BUILD-INFO" <<INFO
SPIRE v${VERSION} from upstream source: ${MODULE}@v${VERSION}${commit:+ (commit $commit)}
  built: ${BINS[*]} in $BIN, by $how, $(go version | cut -d' ' -f3)
  linked as upstream's release: version ${VERSION}${githash:+, githash $githash}
  pinned differently from upstream: ${pinned}
INFO
have_all || { echo "install-spire.sh: the new binaries do not report version ${VERSION}" >&2; exit 1; }
echo "built in $(( $(date +%s) - start ))s"
report
