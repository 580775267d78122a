"""Scale: 1,000 AWS targets against emulators that answer every call 50 ms late.

The daemon runs as `python -m bridge run` (its own process) against the dev stack in
another process (tests/bench/_stack.py), which adds `--latency` to every FetchJWTSVID
and every AssumeRoleWithWebIdentity. Figures:

- fill time: from process start until every `aws/<target>.json` exists, against the
  ideal `ceil(targets / concurrency) x calls per target x latency` (calls per target
  counted at the emulators: an AWS target is one SVID fetch plus one STS call). Also
  shown: the same from the moment the daemon logs that it is running (start-up and
  wiring of 1,000 targets excluded), and the measured start-up to the first file.
- idle CPU: the daemon's user+system CPU seconds over a `--idle` window after a
  warm-up, scaled to seconds per minute (1 % of a core = 0.6 s/min).
- RSS of the daemon after the window (/proc/<pid>/status VmRSS).

    python -m tests.bench.bench_scale [--targets 1000] [--latency 0.05] [--rounds 2]
        [--idle 30] [--warmup 5] [--json FILE] [--profile DIR]
"""

from __future__ import annotations

import argparse
import math
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import yaml

from tests.bench._common import (
    PYTHON,
    ROOT,
    Daemon,
    Workdir,
    aws_targets,
    bytecode_env,
    context_switches,
    cpu_seconds,
    median,
    py_spy_prefix,
    report,
    rss_bytes,
    thread_cpu,
    threads,
    user_sys,
    warm_bytecode,
    write_config,
)
from tests.bench._stack import FETCH, WEB_IDENTITY, StackProcess

CONCURRENCY = 32  # the default of refresh.concurrency (not set in the config)
RUNNING_LINE = "spiffe-bridge running"


def _count_json(directory: Path) -> int:
    try:
        return sum(1 for n in os.listdir(directory) if n.endswith(".json") and n[0] != ".")
    except FileNotFoundError:
        return 0


def one_round(stack: StackProcess, work: Workdir, *, index: int, targets: int,
              latency: float, idle: float, warmup: float, env: dict[str, str],
              profile: Path | None) -> dict[str, Any]:
    outputs = work.shm / f"out{index}"
    config = write_config(work.tmp / f"scale{index}.yaml",
                          workload_socket=stack.info["workload_socket"], outputs=outputs,
                          on_tmpfs=work.on_tmpfs, grpc_socket=work.tmp / f"b{index}.sock",
                          targets=aws_targets(targets, stack.info["aws_sts_url"],
                                              stack.info["role_arn"]))
    # What this measures is the engine's fill, not the account's STS quota (600/s, which
    # the budget would otherwise hold 1,000 targets of one account to).
    doc = yaml.safe_load(config.read_text())
    account = stack.info["role_arn"].split(":")[4]
    doc.setdefault("refresh", {})["scope_rates"] = {f"aws_sts {account} us-east-1": 1e6}
    config.write_text(yaml.safe_dump(doc, sort_keys=False))
    stack.reset_calls(latency)
    log = work.tmp / f"scale{index}.log"
    prefix: list[str] = []
    if profile is not None:
        profile.mkdir(parents=True, exist_ok=True)
        prefix = py_spy_prefix(profile / f"scale{index}.collapsed")
    daemon = Daemon(config, log, env, argv_prefix=prefix)
    stack_cpu0 = cpu_seconds(stack.pid)
    started = daemon.start()
    aws_dir = outputs / "aws"
    running_at: float | None = None
    first_at: float | None = None
    deadline = started + 300
    try:
        while True:
            now = time.monotonic()
            daemon.check_alive()
            if running_at is None and RUNNING_LINE in log.read_text(errors="replace")[:20000]:
                running_at = now
            count = _count_json(aws_dir)
            if count and first_at is None:
                first_at = now
            if count >= targets:
                done_at = now
                break
            if now > deadline:
                raise TimeoutError(f"only {count} of {targets} credentials after 300 s")
            time.sleep(0.01)
        stack_cpu = cpu_seconds(stack.pid) - stack_cpu0
        pid = daemon.bridge_pid
        fill_cpu = cpu_seconds(pid)
        fill_threads = thread_cpu(pid)
        fill_user_sys = user_sys(pid)
        switches = context_switches(pid)
        calls = stack.calls()
        time.sleep(warmup)
        cpu0, t0 = cpu_seconds(pid), time.monotonic()
        time.sleep(idle)
        cpu1, t1 = cpu_seconds(pid), time.monotonic()
        rss = rss_bytes(pid)
        nthreads = threads(pid)
        calls_after = stack.calls()
    finally:
        daemon.stop()
    stages = _stage_medians(log)
    per_target = (calls[FETCH] + calls[WEB_IDENTITY]) / targets
    ideal = math.ceil(targets / CONCURRENCY) * per_target * latency
    fill = done_at - started
    return {
        "fill_s": fill, "ideal_s": ideal, "ratio": fill / ideal,
        "from_running_s": done_at - (running_at or started),
        "startup_to_first_s": (first_at or done_at) - started,
        "running_after_s": (running_at or started) - started,
        "stage_median_ms": stages, "daemon_cpu_fill_s": fill_cpu,
        "daemon_cpu_by_thread_s": fill_threads, "daemon_user_sys_fill_s": fill_user_sys,
        "daemon_context_switches_fill": switches, "stack_cpu_fill_s": stack_cpu,
        "calls": calls, "calls_per_target": per_target,
        "calls_during_idle": {k: calls_after[k] - calls[k] for k in calls},
        "idle_cpu_s_per_min": (cpu1 - cpu0) / (t1 - t0) * 60,
        "idle_window_s": t1 - t0, "rss_mb": rss / 2**20, "threads": nthreads,
    }


def direct_fill(socket: str, sts_url: str, role_arn: str, outdir: str, targets: str) -> None:
    """The baseline, run as its own process: the same calls for every target from a plain
    pool of CONCURRENCY threads (one py-spiffe client, one boto3 client), each result
    written atomically as JSON. No scheduler, checks, metrics, logging or other outputs."""
    import json as json_
    from concurrent.futures import ThreadPoolExecutor

    import boto3
    import botocore
    from botocore.config import Config as BotoConfig
    from spiffe import WorkloadApiClient

    client = WorkloadApiClient(socket, default_timeout=30)
    sts = boto3.client("sts", region_name="us-east-1", endpoint_url=sts_url,
                       config=BotoConfig(signature_version=botocore.UNSIGNED,
                                         max_pool_connections=CONCURRENCY,
                                         retries={"total_max_attempts": 1}))
    out = Path(outdir)
    out.mkdir(mode=0o700)

    def one(i: int) -> None:
        svid = client.fetch_jwt_svid({"sts.amazonaws.com"})
        c = sts.assume_role_with_web_identity(
            RoleArn=role_arn, RoleSessionName=f"t{i}", WebIdentityToken=svid.token,
            DurationSeconds=3600)["Credentials"]
        doc = {"Version": 1, "AccessKeyId": c["AccessKeyId"],
               "SecretAccessKey": c["SecretAccessKey"], "SessionToken": c["SessionToken"],
               "Expiration": c["Expiration"].isoformat()}
        temp = out / f".t{i}.json.tmp"
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, json_.dumps(doc, indent=2).encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temp, out / f"t{i}.json")

    with ThreadPoolExecutor(CONCURRENCY) as pool:
        list(pool.map(one, range(int(targets))))
    client.close()


def direct_round(stack: StackProcess, work: Workdir, *, index: int, targets: int,
                 latency: float, env: dict[str, str]) -> dict[str, Any]:
    outdir = work.shm / f"direct{index}"
    stack.reset_calls(latency)
    started = time.monotonic()
    proc = subprocess.Popen(
        [PYTHON, "-c", "import sys; from tests.bench.bench_scale import direct_fill; "
         "direct_fill(*sys.argv[1:])", stack.info["workload_socket"],
         stack.info["aws_sts_url"], stack.info["role_arn"], str(outdir), str(targets)],
        env=env, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE)
    try:
        while _count_json(outdir) < targets:
            if proc.poll() is not None and _count_json(outdir) < targets:
                raise RuntimeError(f"direct baseline failed: {proc.stderr.read()!r}"  # type: ignore[union-attr]
                                   if proc.stderr else "direct baseline failed")
            if time.monotonic() - started > 300:
                raise TimeoutError("direct baseline did not finish in 300 s")
            time.sleep(0.01)
        fill = time.monotonic() - started
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    calls = stack.calls()
    return {"fill_s": fill, "calls_per_target": (calls[FETCH] + calls[WEB_IDENTITY]) / targets}


def _stage_medians(log: Path) -> dict[str, float]:
    """Median per refresh stage, from the daemon's own `refreshed ...` log lines."""
    stages: dict[str, list[float]] = {}
    for line in log.read_text(errors="replace").splitlines():
        found = re.search(r"refreshed \S+: valid for \d+s \(([^)]*)\)", line)
        if found:
            for part in found.group(1).split(", "):
                name, _, ms = part.rpartition(" ")
                stages.setdefault(name, []).append(float(ms.removesuffix("ms")))
    return {k: median(v) for k, v in stages.items()}


def run(targets: int, latency: float, rounds: int, idle: float, warmup: float,
        profile: Path | None = None, with_direct: bool = True) -> dict[str, Any]:
    work = Workdir("sbsc-")
    env = bytecode_env()
    warm_bytecode(env)
    stack = StackProcess(work.tmp / "stack", workers=CONCURRENCY * 2 + 8).start()
    runs, direct = [], []
    try:
        for i in range(rounds):  # interleaved, the order swapped every other round
            for side in (("bridge", "direct") if i % 2 == 0 else ("direct", "bridge")):
                if side == "bridge":
                    runs.append(one_round(stack, work, index=i, targets=targets,
                                          latency=latency, idle=idle, warmup=warmup, env=env,
                                          profile=profile))
                elif with_direct:
                    direct.append(direct_round(stack, work, index=i, targets=targets,
                                               latency=latency, env=env))
    finally:
        stack.stop()
        work.cleanup()
    keys = [k for k, v in runs[0].items() if isinstance(v, int | float)]
    summary = {k: median(r[k] for r in runs) for k in keys}
    if direct:
        summary["direct_fill_s"] = median(d["fill_s"] for d in direct)
        summary["direct_ratio"] = summary["fill_s"] / summary["direct_fill_s"]
        summary["direct_ideal_ratio"] = summary["direct_fill_s"] / summary["ideal_s"]
    return {"targets": targets, "latency_s": latency, "concurrency": CONCURRENCY,
            "rounds": rounds, "runs": runs, "direct_runs": direct, "median": summary}


def table(results: dict[str, Any]) -> str:
    m = results["median"]
    return "\n".join([
        f"Scale: {results['targets']} AWS targets, +{results['latency_s'] * 1000:.0f} ms per "
        f"emulator call, concurrency {results['concurrency']} (median of "
        f"{results['rounds']} runs)",
        f"  fill time from process start   {m['fill_s']:7.2f} s   ideal {m['ideal_s']:.2f} s "
        f"({m['calls_per_target']:.2f} calls/target)  ratio {m['ratio']:.2f}  "
        "(target <= 1.25)",
        *([f"  direct client, same calls      {m['direct_fill_s']:7.2f} s   (32 threads, "
           f"py-spiffe + boto3, from process start; ratio to ideal "
           f"{m['direct_ideal_ratio']:.2f}; bridge/direct {m['direct_ratio']:.2f})"]
          if "direct_fill_s" in m else []),
        f"  fill time from 'running'       {m['from_running_s']:7.2f} s   "
        f"(running {m['running_after_s']:.2f} s after start; first file at "
        f"{m['startup_to_first_s']:.2f} s)",
        f"  CPU while filling              daemon {m['daemon_cpu_fill_s']:.2f} s, emulators "
        f"{m['stack_cpu_fill_s']:.2f} s (2 cores: {2 * m['fill_s']:.1f} core-seconds)",
        f"  idle CPU                       {m['idle_cpu_s_per_min']:7.3f} s/min "
        f"({m['idle_cpu_s_per_min'] / 60 * 100:.2f} % of a core; target < 1 %)",
        f"  RSS                            {m['rss_mb']:7.1f} MB   (target < 150 MB; "
        f"{m['threads']:.0f} threads)",
    ])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--targets", type=int, default=1000)
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--idle", type=float, default=30.0, help="idle CPU window, seconds")
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--profile", type=Path, help="py-spy the daemon into this directory")
    parser.add_argument("--no-direct", action="store_true", help="skip the direct baseline")
    args = parser.parse_args(argv)
    results = run(args.targets, args.latency, args.rounds, args.idle, args.warmup,
                  args.profile, with_direct=not args.no_direct)
    report(results, table(results), args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
