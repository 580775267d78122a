"""The daemon: its assembly from config (`daemon`) and its lifetime across signals and
config reloads (`supervisor`). `run` and `dev` both go through `run_until_signalled`."""

from __future__ import annotations

from bridge.app.daemon import Daemon, build, run_once, serve, use_worker_threads
from bridge.app.supervisor import run_until_signalled, supervise

__all__ = ["Daemon", "build", "run_once", "run_until_signalled", "serve", "supervise",
           "use_worker_threads"]
