"""Refresh overhead: one full bridge refresh vs the same library calls in a straight line.

Both sides run in this process, against the same dev stack (its own process, no added
latency), alternating one refresh each (ABBA order) so drift hits both alike:

- bridge: `Scheduler.refresh(pipeline)` (JWT-SVID fetch through the Workload API source
  with its local signature check, AssumeRoleWithWebIdentity through the AWS hop, store
  publish, metrics, the INFO log line through the redacting handler) followed by
  `OutputWriter.flush()` (the atomic write of `aws/<t>.json` and `aws/credentials`),
  exactly as `run` wires them (`daemon.build`, worker threads, logging to /dev/null).
- direct: py-spiffe `WorkloadApiClient.fetch_jwt_svid`, boto3
  `assume_role_with_web_identity` on an unsigned client, then the same two files written
  atomically (temp file, fsync, rename) with the same JSON and INI bytes.

Clients are created once on both sides, outside the clock. Prints median and p99 of
each and their ratios (target: median ratio <= 1.05).

    python -m tests.bench.bench_refresh [--refreshes 300] [--warmup 20] [--json FILE]
        [--profile FILE]   (bridge side only, under py-spy: for a missed target)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.bench._common import Workdir, aws_targets, median, percentile, report, write_config
from tests.bench._stack import StackProcess

TARGET = "bench"


def _direct(socket: str, sts_url: str, role_arn: str, outdir: Path) -> Callable[[], None]:
    """The straight-line script: the same calls with nothing around them."""
    import boto3
    import botocore
    from botocore.config import Config as BotoConfig
    from spiffe import WorkloadApiClient

    from bridge.model import utc_iso

    client = WorkloadApiClient(socket, default_timeout=10)
    sts = boto3.client("sts", region_name="us-east-1", endpoint_url=sts_url,
                       config=BotoConfig(signature_version=botocore.UNSIGNED,
                                         retries={"total_max_attempts": 1}))
    outdir.mkdir(mode=0o700, exist_ok=True)

    def atomic_write(path: Path, data: bytes) -> None:
        temp = path.with_name(f".{path.name}.tmp")
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temp, path)

    def refresh() -> None:
        svid = client.fetch_jwt_svid({"sts.amazonaws.com"})
        out = sts.assume_role_with_web_identity(
            RoleArn=role_arn, RoleSessionName="bench", WebIdentityToken=svid.token,
            DurationSeconds=3600)
        c = out["Credentials"]
        expiration = utc_iso(c["Expiration"].timestamp())
        doc = {"Version": 1, "AccessKeyId": c["AccessKeyId"],
               "SecretAccessKey": c["SecretAccessKey"], "SessionToken": c["SessionToken"],
               "Expiration": expiration}
        atomic_write(outdir / f"{TARGET}.json", json.dumps(doc, indent=2).encode())
        ini = (f"# Written by spiffe-bridge; rewritten on every refresh. Do not edit.\n\n"
               f"[{TARGET}]\n# expires {expiration}\n"
               f"aws_access_key_id = {c['AccessKeyId']}\n"
               f"aws_secret_access_key = {c['SecretAccessKey']}\n"
               f"aws_session_token = {c['SessionToken']}\n")
        atomic_write(outdir / "credentials", ini.encode())

    return refresh


async def _measure(config_path: Path, direct: Callable[[], None], refreshes: int,
                   warmup: int, profile: Path | None = None) -> dict[str, list[float]]:
    from bridge.app import daemon as d
    from bridge.config import load_config
    from bridge.logs import Redactor, setup_logging

    config = load_config(config_path)
    redactor = Redactor()
    devnull = open(os.devnull, "w")  # noqa: SIM115 - closed below
    setup_logging(redactor, level="INFO", stream=devnull)
    d.use_worker_threads(config)
    daemon = d.build(config, redactor=redactor)
    d._prepare(daemon)  # the directory checks `serve` does first
    (pipeline,) = daemon.scheduler._pipelines
    times: dict[str, list[float]] = {"bridge": [], "direct": []}
    cpu: dict[str, float] = {"bridge": 0.0, "direct": 0.0}

    async def bridge() -> None:
        status = await daemon.scheduler.refresh(pipeline)
        if status.consecutive_failures:
            raise RuntimeError(f"bridge refresh failed: {status.last_error_detail}")
        if await daemon.writer.flush():
            raise RuntimeError("bridge write failed")

    try:
        if profile is not None:
            for _ in range(warmup):
                await bridge()
            with _py_spy_attached(profile):
                for _ in range(refreshes):
                    await bridge()
            return times
        for i in range(warmup + refreshes):
            order = ("bridge", "direct") if i % 2 == 0 else ("direct", "bridge")
            for side in order:
                c0, t0 = time.process_time(), time.perf_counter()
                if side == "bridge":
                    await bridge()
                else:
                    direct()
                elapsed = time.perf_counter() - t0
                if i >= warmup:
                    times[side].append(elapsed)
                    cpu[side] += time.process_time() - c0
    finally:
        daemon.source.close()
        devnull.close()
    return {**times, "cpu_ms": [cpu["bridge"] / refreshes * 1000,
                                cpu["direct"] / refreshes * 1000]}


@contextlib.contextmanager
def _py_spy_attached(out: Path) -> Iterator[None]:
    """py-spy recording this very process (GIL samples) for the duration of the block."""
    from tests.bench._common import py_spy

    exe = py_spy()
    if exe is None:
        raise RuntimeError("py-spy is not installed (pip install py-spy)")
    spy = subprocess.Popen([exe, "record", "--pid", str(os.getpid()), "--gil", "--rate",
                            "1000", "--nonblocking", "--format", "raw", "-o", str(out)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)  # attached
    try:
        yield
    finally:
        spy.send_signal(signal.SIGINT)
        spy.wait(30)


def run(refreshes: int, warmup: int, profile: Path | None = None) -> dict[str, Any]:
    work = Workdir("sbrf-")
    stack = StackProcess(work.tmp / "stack").start()
    try:
        info = stack.info
        config = write_config(
            work.tmp / "bridge.yaml", workload_socket=info["workload_socket"],
            outputs=work.shm / "bridge", on_tmpfs=work.on_tmpfs, http=False,
            targets=aws_targets(1, info["aws_sts_url"], info["role_arn"], prefix=TARGET))
        # aws_targets names it bench0: rename to TARGET for the direct side's file names
        config.write_text(config.read_text().replace(f"name: {TARGET}0", f"name: {TARGET}"))
        direct = _direct(info["workload_socket"], info["aws_sts_url"], info["role_arn"],
                         work.shm / "direct")
        times = asyncio.run(_measure(config, direct, refreshes, warmup, profile))
        stack_calls = stack.calls()
        if profile is not None:
            return {"profile": str(profile)}
    finally:
        stack.stop()
        work.cleanup()
    out: dict[str, Any] = {"refreshes": refreshes, "warmup": warmup,
                           "calls_at_emulators": stack_calls}
    cpu_ms = times.pop("cpu_ms")
    out["cpu_ms_per_refresh"] = {"bridge": cpu_ms[0], "direct": cpu_ms[1]}
    for side, values in times.items():
        out[side] = {"median_ms": median(values) * 1000,
                     "p99_ms": percentile(values, 0.99) * 1000,
                     "min_ms": min(values) * 1000}
    out["ratio_median"] = out["bridge"]["median_ms"] / out["direct"]["median_ms"]
    out["ratio_p99"] = out["bridge"]["p99_ms"] / out["direct"]["p99_ms"]
    return out


def table(r: dict[str, Any]) -> str:
    b, d = r["bridge"], r["direct"]
    return "\n".join([
        f"Refresh overhead: {r['refreshes']} refreshes per side, interleaved ABBA "
        f"({r['warmup']} warm-up each), dev stack without added latency",
        f"  {'':8} {'median ms':>10} {'p99 ms':>8} {'min ms':>8}",
        f"  {'bridge':8} {b['median_ms']:>10.2f} {b['p99_ms']:>8.2f} {b['min_ms']:>8.2f}",
        f"  {'direct':8} {d['median_ms']:>10.2f} {d['p99_ms']:>8.2f} {d['min_ms']:>8.2f}",
        f"  ratio median {r['ratio_median']:.3f} (target <= 1.05), p99 {r['ratio_p99']:.3f}",
        f"  CPU of this process per refresh (all threads): bridge "
        f"{r['cpu_ms_per_refresh']['bridge']:.2f} ms, direct "
        f"{r['cpu_ms_per_refresh']['direct']:.2f} ms",
    ])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--refreshes", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--profile", type=Path,
                        help="after the warm-up, py-spy (GIL samples) this process through "
                        "bridge-only refreshes into this file (collapsed stacks)")
    args = parser.parse_args(argv)
    results = run(args.refreshes, args.warmup, args.profile)
    if args.profile:
        print(f"profile of {args.refreshes} bridge refreshes: {args.profile}")
        return 0
    report(results, table(results), args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
