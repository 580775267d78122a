"""The bridge as a real process: `python -m bridge ...` with this interpreter (the
project's venv), from the tests and the benchmarks alike."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO

import yaml

BRIDGE = (sys.executable, "-m", "bridge")
REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    """A loopback port free right now (the caller binds it soon after)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def with_http_port(config: Path) -> int:
    """Give the config's /metrics server a fixed free port (it says 127.0.0.1:0)."""
    doc = yaml.safe_load(config.read_text())
    port = free_port()
    doc.setdefault("http", {})["address"] = f"127.0.0.1:{port}"
    config.write_text(yaml.safe_dump(doc))
    return port


def clean_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment without SPIFFE_ENDPOINT_SOCKET: configs must name their socket."""
    return {k: v for k, v in (env if env is not None else os.environ).items()
            if k != "SPIFFE_ENDPOINT_SOCKET"}


def bridge_cli(*args: str, env: Mapping[str, str] | None = None, timeout: float = 120,
               cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    """`spiffe-bridge ARGS` run to completion from the repository root (relative paths in
    docs and manifests resolve there), output captured as text."""
    return subprocess.run([*BRIDGE, *args], capture_output=True, text=True, check=False,
                          env=clean_env(env), timeout=timeout, cwd=cwd)


def start_bridge(*args: str, log: Path | None = None, text: bool = True,
                 env: Mapping[str, str] | None = None) -> subprocess.Popen[str]:
    """`spiffe-bridge ARGS` in the background: output to `log` (stdout and stderr
    together), else piped for `stop`."""
    out: IO[bytes] | int = subprocess.PIPE
    with contextlib.ExitStack() as stack:
        if log is not None:
            out = stack.enter_context(log.open("wb"))
        return subprocess.Popen([*BRIDGE, *args], stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT if log is not None else subprocess.PIPE,
                                text=text and log is None, env=clean_env(env))


def stop(proc: subprocess.Popen[str], sig: int = signal.SIGTERM,
         timeout: float = 15) -> tuple[int, str, str]:
    """Signal it and wait: (exit code, stdout, stderr); killed if it does not exit."""
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate(timeout=10)
        raise
    return proc.returncode, out or "", err or ""


def run_args(config: Path, *extra: str) -> Sequence[str]:
    """`run --config F` and more."""
    return ("run", "--config", str(config), *extra)
