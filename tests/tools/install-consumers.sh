#!/usr/bin/env bash
# Builds the non-Python SDK consumers of tests/consumers/ and the AWS CLI into
#   ${XDG_CACHE_HOME:-$HOME/.cache}/spiffe-bridge/tools/consumers/
#     go/consumer                   aws-sdk-go-v2, x/oauth2/google, compute/metadata (go.sum)
#     node/consumer.js + node_modules   AWS SDK v3 providers, google-auth-library (npm ci)
#     java/consumer.jar + java/lib/ AWS SDK for Java v2 (Maven, BOM-pinned)
#     awscli/bin/aws                `awscli` from PyPI in its own venv (never the project's)
# for tests/integration/consumers. Idempotent: each part is rebuilt only when its
# sources changed (a stamp of their sha256 sits beside it). A part whose toolchain is
# missing is skipped with a note (its tests then skip), or fails the script under CI=true.
set -euo pipefail
SRC="$(cd "$(dirname "$0")/../consumers" && pwd)"
DEST="${XDG_CACHE_HOME:-$HOME/.cache}/spiffe-bridge/tools/consumers"
AWSCLI_VERSION="${AWSCLI_VERSION:-1.46.2}"
command -v go >/dev/null 2>&1 || PATH="/usr/local/go/bin:$PATH"
mkdir -p "$DEST"
started=$(date +%s)
missing=()

stamp_of() {  # the sha256 of the named source files (relative to $SRC), plus extra words
  local dir=$1; shift
  (cd "$SRC/$dir" && sha256sum "$@" && echo "${EXTRA_STAMP:-}") | sha256sum | cut -d' ' -f1
}
fresh() {  # fresh PART STAMP: true when PART was built from these sources
  [ -f "$DEST/$1/.stamp" ] && [ "$(cat "$DEST/$1/.stamp")" = "$2" ]
}
have() {
  if command -v "$1" >/dev/null 2>&1; then return 0; fi
  echo "install-consumers: '$1' not found: skipping the $2 consumer" >&2
  missing+=("$1")
  return 1
}

# -- Go --------------------------------------------------------------------------------
if have go go; then
  stamp=$(EXTRA_STAMP="$(go version)" stamp_of go go.mod go.sum main.go)
  if fresh go "$stamp"; then
    echo "go consumer up to date: $DEST/go/consumer"
  else
    mkdir -p "$DEST/go"
    (cd "$SRC/go" && GOFLAGS=-mod=readonly go build -trimpath -o "$DEST/go/consumer" .)
    echo "$stamp" >"$DEST/go/.stamp"
    echo "built $DEST/go/consumer"
  fi
fi

# -- Node ------------------------------------------------------------------------------
if have node node && have npm node; then
  stamp=$(EXTRA_STAMP="$(node --version)" stamp_of node package.json package-lock.json consumer.js)
  if fresh node "$stamp"; then
    echo "node consumer up to date: $DEST/node/consumer.js"
  else
    rm -rf "$DEST/node" && mkdir -p "$DEST/node"
    cp "$SRC/node/package.json" "$SRC/node/package-lock.json" "$SRC/node/consumer.js" "$DEST/node/"
    (cd "$DEST/node" && npm ci --omit=dev --no-audit --no-fund --loglevel=error)
    echo "$stamp" >"$DEST/node/.stamp"
    echo "installed $DEST/node ($(cd "$DEST/node" && node -p \
      'Object.keys(require("./package.json").dependencies).map(n => n + "@" + require(n + "/package.json").version).join(" ")' 2>/dev/null))"
  fi
fi

# -- Java ------------------------------------------------------------------------------
if have java java && have mvn java; then
  stamp=$(EXTRA_STAMP="$(java -version 2>&1 | head -1)" stamp_of java pom.xml \
          src/main/java/bridgeconsumer/Consumer.java)
  if fresh java "$stamp"; then
    echo "java consumer up to date: $DEST/java/consumer.jar"
  else
    build="$(mktemp -d)"
    trap 'rm -rf "$build"' EXIT
    cp -r "$SRC/java/pom.xml" "$SRC/java/src" "$build/"
    (cd "$build" && mvn -B -q -ntp package 2>&1 | sed "s/\x1b\[[0-9;]*m//g")
    rm -rf "$DEST/java" && mkdir -p "$DEST/java"
    cp "$build/target/consumer-java-0.0.0.jar" "$DEST/java/consumer.jar"
    cp -r "$build/target/lib" "$DEST/java/lib"
    echo "$stamp" >"$DEST/java/.stamp"
    echo "built $DEST/java/consumer.jar ($(ls "$DEST/java/lib" | wc -l) jars in lib/)"
  fi
fi

# -- the AWS CLI, in its own venv ------------------------------------------------------
if have python3 awscli; then
  if [ -x "$DEST/awscli/bin/aws" ] && [ "$(cat "$DEST/awscli/.stamp" 2>/dev/null)" = "$AWSCLI_VERSION" ]; then
    echo "aws CLI up to date: $DEST/awscli/bin/aws"
  else
    rm -rf "$DEST/awscli"
    python3 -m venv "$DEST/awscli"
    "$DEST/awscli/bin/pip" install -q --disable-pip-version-check "awscli==$AWSCLI_VERSION"
    echo "$AWSCLI_VERSION" >"$DEST/awscli/.stamp"
    echo "installed $("$DEST/awscli/bin/aws" --version 2>&1)"
  fi
fi

echo "install-consumers: $(( $(date +%s) - started )) s, $(du -sh "$DEST" | cut -f1) in $DEST"
if [ "${#missing[@]}" -gt 0 ] && [ "${CI:-}" = "true" ]; then
  echo "install-consumers: missing under CI=true: ${missing[*]}" >&2
  exit 1
fi
