"""`spiffe-bridge` command line: thin; parses, loads, wires, runs, maps errors to exit codes.

Exit codes: 0 ok, 1 runtime failure, 2 usage or configuration error. Errors are one
clear line each on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from bridge import __version__
from bridge.cli_readers import add_daemon_arguments, credential_process, status
from bridge.config import Config, load_config
from bridge.errors import BridgeError, ConfigError
from bridge.logs import Redactor, setup_logging

if TYPE_CHECKING:
    from bridge.model import TargetStatus

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigError as exc:
        print(f"spiffe-bridge: invalid configuration ({len(exc.problems)} problem"
              f"{'s' if len(exc.problems) != 1 else ''}):", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return EXIT_USAGE
    except BridgeError as exc:
        print(f"spiffe-bridge: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return EXIT_OK


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="spiffe-bridge", description=(
        "Turns SPIFFE JWT-SVIDs into fresh AWS credentials (files, metrics)."))
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
    c.set_defaults(func=_cmd_run)
    c = command("once", "Refresh every target once, write all outputs, print a summary.")
    c.add_argument("--config", required=True, type=Path)
    c.set_defaults(func=_cmd_once)
    c = command("check", "Validate a config file; list every problem with its key path.")
    c.add_argument("--config", required=True, type=Path)
    c.set_defaults(func=_cmd_check)
    c = command("credential-process",
                "AWS credential_process helper: print a target's credentials as JSON.")
    c.add_argument("--target", required=True)
    add_daemon_arguments(c)
    c.add_argument("--directory", type=Path, help="read the daemon's output files instead")
    c.set_defaults(func=credential_process)
    c = command("status", "Show every target's state and time to expiry (running daemon).")
    add_daemon_arguments(c)
    c.set_defaults(func=status)
    c = command("dev", "Run the embedded development stack and the bridge on a demo config.")
    c.add_argument("--workdir", type=Path, help="where to put sockets, config and outputs")
    c.set_defaults(func=_cmd_dev)
    return p


def _cmd_check(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    print(f"{args.config}: OK ({len(config.targets)} target"
          f"{'s' if len(config.targets) != 1 else ''}: "
          f"{', '.join(t.name for t in config.targets)})")
    return EXIT_OK


def _cmd_run(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    setup_logging(_REDACTOR, level=args.log_level, fmt=args.log_format)
    asyncio.run(_serve(args.config, config))
    return EXIT_OK


async def _serve(path: Path, config: Config) -> None:
    """SIGTERM/SIGINT stop cleanly; SIGHUP reloads the config file."""
    from bridge import daemon as d  # deferred: `check` should not pay for the SDK imports
    from bridge.supervisor import supervise

    d.use_worker_threads(config)
    stop, reload = asyncio.Event(), asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, reload.set)
    await supervise(path, config, stop=stop, reload=reload, redactor=_REDACTOR)


def _cmd_once(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    setup_logging(_REDACTOR, level=args.log_level, fmt=args.log_format)
    statuses = asyncio.run(_once(config))
    now = datetime.now(UTC).timestamp()
    ok = True
    print(f"{'TARGET':<24} {'RESULT':<8} {'EXPIRES IN':>10}  DETAIL")
    for s in statuses:
        c = s.valid_credential(now)
        good = s.consecutive_failures == 0 and c is not None
        ok = ok and good
        left = f"{(c.expires_at - now) / 60:.0f}m" if c else "-"
        detail = "" if good else (s.last_error_detail or "")
        print(f"{s.name:<24} {'ok' if good else 'FAILED':<8} {left:>10}  {detail}")
    print(f"outputs written to {config.outputs.directory}")
    return EXIT_OK if ok else EXIT_FAILURE


async def _once(config: Config) -> list[TargetStatus]:
    from bridge import daemon as d

    d.use_worker_threads(config)
    return list(await d.run_once(d.build(config, redactor=_REDACTOR, serve_http=False)))


def _cmd_dev(args: argparse.Namespace) -> int:
    from bridge.devstack.demo import run_demo

    setup_logging(_REDACTOR, level=args.log_level, fmt=args.log_format)
    return int(run_demo(args.workdir, redactor=_REDACTOR))


# One redactor for the process: everything the daemon learns is masked in every log line.
_REDACTOR = Redactor()
