"""`spiffe-bridge`: the parser and the error-to-exit-code mapping (the commands are in
`commands` and `readers`).

Exit codes: 0 ok, 1 runtime failure, 2 usage or configuration error. Errors are one
clear line each on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from bridge import __version__
from bridge.cli.commands import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, check, dev, once, run
from bridge.cli.output import say
from bridge.cli.readers import add_daemon_arguments, credential_process, status
from bridge.errors import BridgeError, ConfigError


def entry() -> NoReturn:
    """The `spiffe-bridge` executable: `main()`, then out without interpreter teardown.

    Everything the daemon owns is closed by the time `main()` returns (listeners, files,
    the Workload API). What is left is grpcio's C core, whose threads race Python's
    finalization at exit and now and then abort the process (`Check failed:
    wakeup_fd_->Wakeup().ok()`), turning a clean stop into a signal death that systemd
    and Kubernetes count as a crash. So flush and leave with the exit code as it is."""
    code = main()
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; return its exit code (0 ok, 1 failure, 2 usage or config)."""
    args = _parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigError as exc:
        say(f"spiffe-bridge: invalid configuration ({len(exc.problems)} problem"
            f"{'s' if len(exc.problems) != 1 else ''}):", err=True)
        for problem in exc.problems:
            say(f"  {problem}", err=True)
        return EXIT_USAGE
    except BridgeError as exc:
        say(f"spiffe-bridge: {exc}", err=True)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return EXIT_OK


DESCRIPTION = """\
Turns SPIFFE JWT-SVIDs (from a SPIRE agent's Workload API) into fresh cloud
credentials: AWS sessions (AssumeRoleWithWebIdentity, role chains) and GCP access
tokens (workload identity federation, service-account impersonation), cross-cloud
chains too. The daemon keeps each target's credentials fresh and hands them out as
files on tmpfs (AWS shared credentials and credential_process JSON, GCP token files,
external_account configs, the JWT-SVID), over a gRPC API, through the AWS container /
IMDSv2 and GCE metadata endpoints SDKs already read, with Prometheus metrics and
health endpoints."""

EPILOG = """\
Try it without a cloud: `spiffe-bridge dev` runs the development stack (emulated
agent, AWS STS, Google STS/IAM) and the bridge, and prints what to paste. For real:
`spiffe-bridge check --config F`, then `spiffe-bridge run --config F`.
`spiffe-bridge COMMAND --help` describes each command; the README, every config key."""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="spiffe-bridge", description=DESCRIPTION, epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"spiffe-bridge {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        c = sub.add_parser(name, help=help_text, description=help_text)
        c.add_argument("--log-level", default="INFO",
                       choices=["DEBUG", "INFO", "WARNING", "ERROR"])
        c.add_argument("--log-format", default="text", choices=["text", "json"])
        return c

    c = command("run", "Run the daemon: keep every target's credentials fresh.")
    c.add_argument("--config", required=True, type=Path)
    c.set_defaults(func=run)
    c = command("once", "Refresh every target once, write all outputs, print a summary.")
    c.add_argument("--config", required=True, type=Path)
    c.set_defaults(func=once)
    c = command("check", "Validate a config file; list every problem with its key path.")
    c.add_argument("--config", required=True, type=Path)
    c.set_defaults(func=check)
    c = command("credential-process",
                "AWS credential_process helper: print a target's credentials as JSON.")
    which = c.add_mutually_exclusive_group(required=True)
    which.add_argument("--target")
    which.add_argument("--workload-target",
                       help="this process's own credential under a workload target, from "
                       "the workload socket (--socket, or the config's workloads.grpc_socket)")
    add_daemon_arguments(c)
    c.add_argument("--directory", type=Path, help="read the daemon's output files instead")
    c.set_defaults(func=credential_process)
    c = command("status", "Show every target's state and time to expiry (running daemon).")
    add_daemon_arguments(c)
    c.set_defaults(func=status)
    c = command("dev", "Run the embedded development stack and the bridge on a demo config.")
    c.add_argument("--workdir", type=Path,
                   help="where to put sockets, config and credentials (default: new "
                   "temporary directories)")
    c.add_argument("--keep", action="store_true",
                   help="keep the credentials (and temporary directories) on exit")
    c.set_defaults(func=dev)
    return p


if __name__ == "__main__":  # the full CLI alone (`python -m bridge.cli.full`), for benchmarks
    entry()
