"""The CLI commands that read from a running daemon: `credential-process` and `status`.

Both find the daemon through `--socket URI` or `--config FILE` (its `grpc.socket`) and
speak the gRPC API through `bridge.client`. When `--workload-api` (or
$SPIFFE_ENDPOINT_SOCKET) names an agent, they send this process's own JWT-SVID, so
targets with `allowed_callers` work too. `credential-process --directory DIR` reads the
files instead, and `--config` falls back to them when no daemon socket exists (after
`once` in an init container). A daemon that is not there, or a target it (or the
config) does not have, is one line naming the socket or the target.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar
from urllib.parse import urlsplit

from bridge.cli.commands import EXIT_FAILURE, EXIT_OK, EXIT_USAGE
from bridge.cli.fast import remember
from bridge.cli.output import say
from bridge.config import DEFAULT_CALLER_AUDIENCE, load_config
from bridge.errors import ApiError

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
    if args.workload_target is not None:
        return _workload_credential(args)
    return _target_credential(args)


def _target_credential(args: argparse.Namespace) -> int:
    if args.directory is not None:
        return _from_files(args.directory, args.target)
    located = _locate(args)
    if located is None:
        print("spiffe-bridge: credential-process needs --config, --socket or --directory",
              file=sys.stderr)
        return EXIT_USAGE
    socket, directory, names = located
    if names is not None and args.target not in names:
        return _fail(f"unknown target {args.target!r} (the config's targets: "
                     f"{', '.join(names) or 'none'})")
    if directory is not None and not _listening(socket):
        if not (directory / "aws" / f"{args.target}.json").exists():
            return _fail(f"daemon not running at {socket}, and {directory} holds no "
                         f"credentials for {args.target!r} (from `once`)")
        return _from_files(directory, args.target)
    return _from_daemon(args, socket)


def _from_daemon(args: argparse.Namespace, socket: str) -> int:
    with _client(args, socket) as client:
        served = _ask(lambda: client.get_credential(args.target), socket, args.target)
    if served is None:
        return EXIT_FAILURE
    from bridge.clouds.aws import AwsCredentials
    from bridge.clouds.aws.files import process_json

    if not isinstance(served.material, AwsCredentials) or served.expires_at is None:
        return _fail(f"target {args.target!r} does not hold AWS credentials")
    sys.stdout.write(json.dumps(process_json(served.material, served.expires_at)))
    return EXIT_OK


def _workload_credential(args: argparse.Namespace) -> int:
    """`--workload-target R`: the calling process's own credential (the bridge attests
    this process through the SPIRE agent's Broker API). A JWT-SVID is sent only with an
    explicit `--audience` (broker-less mode: the rule's audience)."""
    socket = args.socket
    if socket is None and args.config is not None:
        workloads = load_config(args.config).workloads
        socket = workloads.grpc_socket if workloads is not None else None
    if not socket:
        print("spiffe-bridge: credential-process --workload-target needs --socket (the "
              "workload socket) or --config with workloads.grpc_socket", file=sys.stderr)
        return EXIT_USAGE
    from bridge.client import BridgeClient, workload_api_svid

    svid = workload_api_svid(args.workload_api, args.audience) if (
        args.workload_api and args.audience) else None
    with BridgeClient(socket, svid=svid, timeout=15.0) as client:
        served = _ask(lambda: client.get_workload_credential(args.workload_target), socket)
    if served is None:
        return EXIT_FAILURE
    from bridge.clouds.aws import AwsCredentials
    from bridge.clouds.aws.files import process_json

    if not isinstance(served.material, AwsCredentials) or served.expires_at is None:
        return _fail(f"workload target {args.workload_target!r} does not hold AWS "
                     "credentials")
    sys.stdout.write(json.dumps(process_json(served.material, served.expires_at)))
    return EXIT_OK


def status(args: argparse.Namespace) -> int:
    located = _locate(args)
    if located is None:
        print("spiffe-bridge: status needs --config or --socket", file=sys.stderr)
        return EXIT_USAGE
    socket = located[0]
    if not _listening(socket):
        return _fail(f"daemon not running at {socket}")
    with _client(args, socket) as client:
        targets = _ask(client.list_targets, socket)
    if targets is None:
        return EXIT_FAILURE
    now = datetime.now(UTC).timestamp()
    say(f"{'TARGET':<24} {'CLOUD':<5} {'STATE':<8} {'EXPIRES IN':>10}  LAST ERROR")
    for t in targets:
        left = f"{(t.expires_at - now) / 60:.0f}m" if t.expires_at else "-"
        say(f"{t.name:<24} {t.cloud:<5} {t.state.value:<8} {left:>10}  {t.last_error}")
    if not targets:
        print("(no target this caller may read)")
    healthy = all(t.state.value != "expired" for t in targets)
    return EXIT_OK if healthy else EXIT_FAILURE


def _locate(args: argparse.Namespace) -> tuple[str, Path | None, tuple[str, ...] | None] | None:
    """The daemon's socket, and its output directory and target names when the config
    says."""
    if args.socket:
        return args.socket, None, None
    if args.config is None:
        return None
    config = load_config(args.config)
    if urlsplit(config.grpc.socket).scheme == "unix":
        remember(str(args.config), urlsplit(config.grpc.socket).path)  # for `cli.fast`
    if args.audience is None:
        args.audience = config.grpc.caller_audience
    return config.grpc.socket, config.outputs.directory, tuple(t.name for t in config.targets)


def _listening(socket: str) -> bool:
    """False when a unix socket's file is not there (no daemon); other addresses: True."""
    parts = urlsplit(socket)
    return parts.scheme != "unix" or Path(parts.path).exists()


T = TypeVar("T")


def _ask(call: Callable[[], T], socket: str, target: str | None = None) -> T | None:
    """`call()`; None (after one line on stderr) when no daemon answers at `socket` or it
    has no such target. Other API errors propagate (main prints them)."""
    try:
        return call()
    except ApiError as exc:
        if exc.code == "UNAVAILABLE" and "connect" in str(exc):
            _fail(f"daemon not running at {socket}")
        elif exc.code == "NOT_FOUND" and target is not None:
            _fail(f"unknown target {target!r} (the daemon at {socket} has none of that name)")
        elif exc.code == "UNAUTHENTICATED" and target is not None:
            # A daemon with restricted targets answers an unknown name and a restricted one
            # alike to a caller without an SVID: say both, since we cannot tell which.
            _fail(f"target {target!r} is unknown or needs a caller SVID at the daemon at "
                  f"{socket}: {exc.detail}")
        else:
            raise
    return None


def _fail(message: str) -> int:
    print(f"spiffe-bridge: {message}", file=sys.stderr)
    return EXIT_FAILURE


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
