"""The CLI commands that read from a running daemon: `credential-process` and `status`.

Both find the daemon through `--socket URI` or `--config FILE` (its `grpc.socket`) and
speak the gRPC API through `bridge.client`. When `--workload-api` (or
$SPIFFE_ENDPOINT_SOCKET) names an agent, they send this process's own JWT-SVID, so
targets with `allowed_callers` work too. `credential-process --directory DIR` reads the
files instead, and `--config` falls back to them when no daemon socket exists (after
`once` in an init container).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from bridge.cli.commands import EXIT_FAILURE, EXIT_OK, EXIT_USAGE
from bridge.cli.output import say
from bridge.config import DEFAULT_CALLER_AUDIENCE, load_config

if TYPE_CHECKING:
    from bridge.client import BridgeClient


def add_daemon_arguments(c: argparse.ArgumentParser) -> None:
    c.add_argument("--config", type=Path, help="the daemon's config (finds its socket)")
    c.add_argument("--socket", help="the daemon's gRPC socket (unix:///path)")
    c.add_argument("--workload-api", default=os.environ.get("SPIFFE_ENDPOINT_SOCKET"),
                   help="this process's SPIRE agent, to send its JWT-SVID to the bridge "
                   "(default: $SPIFFE_ENDPOINT_SOCKET)")
    c.add_argument("--audience", help="audience of that JWT-SVID (default: the config's "
                   f"grpc.caller_audience, else {DEFAULT_CALLER_AUDIENCE})")


def credential_process(args: argparse.Namespace) -> int:
    if args.directory is not None:
        return _from_files(args.directory, args.target)
    located = _locate(args)
    if located is None:
        print("spiffe-bridge: credential-process needs --config, --socket or --directory",
              file=sys.stderr)
        return EXIT_USAGE
    socket, directory = located
    if directory is not None and not Path(urlsplit(socket).path).exists():
        return _from_files(directory, args.target)
    with _client(args, socket) as client:
        served = client.get_credential(args.target)
    from bridge.clouds.aws import AwsCredentials
    from bridge.clouds.aws.files import process_json

    if not isinstance(served.material, AwsCredentials) or served.expires_at is None:
        print(f"spiffe-bridge: target {args.target!r} does not hold AWS credentials",
              file=sys.stderr)
        return EXIT_FAILURE
    sys.stdout.write(json.dumps(process_json(served.material, served.expires_at)))
    return EXIT_OK


def status(args: argparse.Namespace) -> int:
    located = _locate(args)
    if located is None:
        print("spiffe-bridge: status needs --config or --socket", file=sys.stderr)
        return EXIT_USAGE
    with _client(args, located[0]) as client:
        targets = client.list_targets()
    now = datetime.now(UTC).timestamp()
    say(f"{'TARGET':<24} {'CLOUD':<5} {'STATE':<8} {'EXPIRES IN':>10}  LAST ERROR")
    for t in targets:
        left = f"{(t.expires_at - now) / 60:.0f}m" if t.expires_at else "-"
        say(f"{t.name:<24} {t.cloud:<5} {t.state.value:<8} {left:>10}  {t.last_error}")
    if not targets:
        print("(no target this caller may read)")
    healthy = all(t.state.value != "expired" for t in targets)
    return EXIT_OK if healthy else EXIT_FAILURE


def _locate(args: argparse.Namespace) -> tuple[str, Path | None] | None:
    """The daemon's socket, and its output directory when the config says."""
    if args.socket:
        return args.socket, None
    if args.config is None:
        return None
    config = load_config(args.config)
    if args.audience is None:
        args.audience = config.grpc.caller_audience
    return config.grpc.socket, config.outputs.directory


def _client(args: argparse.Namespace, socket: str) -> BridgeClient:
    from bridge.client import BridgeClient, workload_api_svid  # grpc: only when used

    svid: Callable[[], str] | None = None
    if args.workload_api:
        svid = workload_api_svid(args.workload_api, args.audience or DEFAULT_CALLER_AUDIENCE)
    return BridgeClient(socket, svid=svid)


def _from_files(directory: Path, target: str) -> int:
    from bridge.clouds.aws.files import read_process_json
    from bridge.model import parse_utc_iso

    doc = read_process_json(directory, target)
    expiration = str(doc.get("Expiration", ""))
    try:
        expires = parse_utc_iso(expiration)
    except ValueError:
        print(f"spiffe-bridge: credentials for {target!r} have no valid Expiration",
              file=sys.stderr)
        return EXIT_FAILURE
    if expires <= datetime.now(UTC).timestamp():
        print(f"spiffe-bridge: credentials for {target!r} expired at {expiration}",
              file=sys.stderr)
        return EXIT_FAILURE
    sys.stdout.write(json.dumps(doc))
    return EXIT_OK
