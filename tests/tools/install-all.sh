#!/usr/bin/env bash
# Every external tool the tests use, each by its own idempotent installer (a second run
# only checks). `make tools` and .ci/run call this; tests skipped for a missing tool
# name it at the end of `make test`. Needs root for the Debian packages (prometheus,
# systemd); the rest goes to ${XDG_CACHE_HOME:-$HOME/.cache}/spiffe-bridge/tools.
set -euo pipefail
cd "$(dirname "$0")"
bash install-prometheus.sh   # Debian's prometheus + promtool (observability tests)
bash install-grpcurl.sh      # grpcurl: a third-party gRPC client (reflection only)
bash install-deploy-tools.sh # helm, kubernetes-validate, CRDs, systemd-analyze (deploy tests)
bash install-spire.sh        # SPIRE v1.15.3 server, agent, OIDC discovery provider (go install)
bash install-consumers.sh    # Go, Node, Java SDK consumers + the aws CLI (tests/integration/consumers)
bash install-faketime.sh     # Debian's libfaketime: the daemon on a shifted clock (host-clock fault tests)
bash install-azurite.sh     # Azurite (npm `azurite`): Azure Blob Storage with OAuth over https (Azure tests)
