"""The commands that run the bridge: `run`, `once`, `check`, `dev`.

Each loads the config, sets up redacted logging and hands over to the app; the SDK
imports are deferred to the commands that need them, so `check` and `--help` stay fast.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import time
from typing import TYPE_CHECKING

from bridge.cli.output import REDACTOR as _REDACTOR
from bridge.cli.output import say
from bridge.cli.preflight import preflight
from bridge.config import Config, file_warnings, load_config
from bridge.config.serving import exposure
from bridge.errors import ConfigError
from bridge.logs import setup_logging

if TYPE_CHECKING:
    from bridge.model import TargetStatus

log = logging.getLogger("bridge.cli")
EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


def check(args: argparse.Namespace) -> int:
    config = _checked(args, starting=False)
    for warning in file_warnings(args.config):
        say(f"spiffe-bridge: warning: {warning}", err=True)
    say(f"{args.config}: OK ({len(config.targets)} target"
        f"{'s' if len(config.targets) != 1 else ''}: "
        f"{', '.join(t.name for t in config.targets)})")
    per_caller = frozenset(k for r in config.workload_targets for k in r.serve_metadata)
    for line in exposure(config.metadata, config.targets, per_caller=per_caller):
        say(f"  {line}")
    for rule in config.workload_targets:  # each caller its own identity, attested
        where = ", ".join([*(["gRPC"] if rule.serve_grpc else []), *rule.serve_metadata])
        say(f"  workload target {rule.name}: callers matching {rule.match} get their own "
            f"credential over {where}")
    return EXIT_OK


def run(args: argparse.Namespace) -> int:
    config = _checked(args, starting=True)
    setup_logging(_REDACTOR, level=args.log_level, fmt=args.log_format)
    for warning in file_warnings(args.config):
        log.warning("%s", warning)
    from bridge.app import run_until_signalled  # deferred: the SDK imports

    asyncio.run(run_until_signalled(args.config, config, redactor=_REDACTOR))
    return EXIT_OK


def _checked(args: argparse.Namespace, *, starting: bool) -> Config:
    """The config, and what it points at on this host (`preflight`): both or ConfigError."""
    config = load_config(args.config)
    problems = preflight(config, args.config, starting=starting)
    if problems:
        raise ConfigError(problems)
    return config


def once(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    setup_logging(_REDACTOR, level=args.log_level, fmt=args.log_format)
    statuses = asyncio.run(_once(config))
    now = time.monotonic()  # credentials' deadlines are on this process's monotonic clock
    ok = True
    say(f"{'TARGET':<24} {'RESULT':<8} {'EXPIRES IN':>10}  DETAIL")
    for s in statuses:
        c = s.valid_credential(now)
        good = s.consecutive_failures == 0 and c is not None
        ok = ok and good
        left = f"{c.remaining(now) / 60:.0f}m" if c else "-"
        detail = "" if good else (s.last_error_detail or "")
        say(f"{s.name:<24} {'ok' if good else 'FAILED':<8} {left:>10}  {detail}")
    say(f"outputs written to {config.outputs.directory}")
    return EXIT_OK if ok else EXIT_FAILURE


async def _once(config: Config) -> list[TargetStatus]:
    from bridge import app

    app.use_worker_threads(config)
    return list(await app.run_once(app.build(config, redactor=_REDACTOR)))


def dev(args: argparse.Namespace) -> int:
    from bridge.devstack.demo import run_demo

    setup_logging(_REDACTOR, level=args.log_level, fmt=args.log_format)
    return int(run_demo(args.workdir, redactor=_REDACTOR, keep=args.keep))

