"""credential_process: wall time of one whole `spiffe-bridge credential-process` call,
the cost the aws CLI pays on every command and each SDK on every new session.

Interleaved in one run, each round in a fresh order, against a daemon on the dev stack:
- `python -c pass`: the bare interpreter (this venv's, so site and .pth are shared);
- `fast --config`: `python -m bridge credential-process --target T --config F` through
  the daemon's reader socket, the locate cache warm (the first call fills it);
- `fast --directory`: the same reading the output directory;
- `full --config`: the full CLI (`python -m bridge.cli.full`), the gRPC path every call
  took before.

Target: fast --config <= 1.5x python -c pass (medians of the same run).

    python -m tests.bench.bench_credential_process [--rounds 15] [--json FILE]
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import time
from pathlib import Path
from typing import Any

from tests.bench._common import (
    PYTHON,
    ROOT,
    Daemon,
    Workdir,
    aws_targets,
    bytecode_env,
    median,
    percentile,
    report,
    warm_bytecode,
    write_config,
)
from tests.bench._stack import StackProcess

TARGET = "t0"


def _commands(config: Path, outputs: Path) -> dict[str, list[str]]:
    process = ["credential-process", "--target", TARGET]
    return {
        "python -c pass": [PYTHON, "-c", "pass"],
        "fast --config": [PYTHON, "-m", "bridge", *process, "--config", str(config)],
        "fast --directory": [PYTHON, "-m", "bridge", *process, "--directory", str(outputs)],
        "full --config": [PYTHON, "-m", "bridge.cli.full", *process, "--config",
                          str(config)],
    }


def _once(argv: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    proc = subprocess.run(argv, env=env, cwd=ROOT, capture_output=True, check=False,
                          timeout=60)
    elapsed = time.perf_counter() - started
    if proc.returncode != 0 or (b"Version" not in proc.stdout and argv[-1] != "pass"):
        raise RuntimeError(f"{argv[2:4]} failed: {proc.stderr.decode()[-500:]}")
    return elapsed


def run(rounds: int) -> dict[str, Any]:
    work = Workdir("sb-bench-cp-")
    stack = StackProcess(work.tmp / "stack").start()
    daemon: Daemon | None = None
    try:
        info = stack.info
        env = bytecode_env({"XDG_CACHE_HOME": str(work.tmp / "cache")})
        warm_bytecode(env)
        outputs = work.shm / "creds"
        config = write_config(work.tmp / "bridge.yaml", workload_socket=info["workload_socket"],
                              outputs=outputs, on_tmpfs=work.on_tmpfs,
                              targets=aws_targets(1, info["aws_sts_url"], info["role_arn"]))
        daemon = Daemon(config, work.tmp / "daemon.log", env)
        daemon.start()
        deadline = time.monotonic() + 60
        while not (outputs / "aws" / f"{TARGET}.json").exists():
            daemon.check_alive()
            if time.monotonic() > deadline:
                raise RuntimeError("no first credential within 60 s")
            time.sleep(0.1)
        commands = _commands(config, outputs)
        for argv in commands.values():  # bytecode, the locate cache, the page cache
            _once(argv, env)
        times: dict[str, list[float]] = {name: [] for name in commands}
        order = list(commands)
        for _ in range(rounds):
            random.shuffle(order)
            for name in order:
                times[name].append(_once(commands[name], env))
    finally:
        if daemon is not None:
            daemon.stop()
        stack.stop()
        work.cleanup()
    base = median(times["python -c pass"])
    return {"rounds": rounds, "cpus": os.cpu_count(),
            "rows": {name: {"median_ms": median(t) * 1000, "p90_ms": percentile(t, 90) * 1000,
                            "x_bare": median(t) / base} for name, t in times.items()}}


def table(r: dict[str, Any]) -> str:
    lines = [f"credential_process, whole process wall time ({r['rounds']} interleaved rounds, "
             "medians)",
             f"{'command':<20} {'median ms':>10} {'p90 ms':>8} {'x bare':>7}"]
    for name, row in r["rows"].items():
        lines.append(f"{name:<20} {row['median_ms']:>10.1f} {row['p90_ms']:>8.1f} "
                     f"{row['x_bare']:>7.2f}")
    lines.append("target: fast --config <= 1.50x python -c pass")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    results = run(max(1, min(args.rounds, 200)))
    report(results, table(results), args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
