"""Roles Anywhere hop: one bridge refresh vs a straight-line signer, side by side.

Both sides run in this process against the same dev stack (its own process: the X.509
Workload API and the Roles Anywhere emulator), alternating one refresh each (ABBA):

- bridge: `Scheduler.refresh(pipeline)` of a `source: x509` target (the X.509-SVID
  from the X509Source stream, the CreateSession request signed on botocore's SigV4Auth
  with the SVID key, store, metrics, the INFO log line) and `OutputWriter.flush()`
  (`aws/<t>.json` and `aws/credentials`), as `run` wires them;
- direct: py-spiffe's X509Source (the same cached SVID), a canonical request, string
  to sign and ECDSA signature computed in a straight line with hashlib and
  cryptography (no botocore: written from AWS's signing-process page, so it also
  cross-checks the bridge's signer against the emulator), one urllib3 POST, and the
  same two files written atomically.

    python -m tests.bench.bench_roles_anywhere [--refreshes 200] [--warmup 20] [--json F]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import multiprocessing
import multiprocessing.connection
import os
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.bench._common import Workdir, median, percentile, report

TARGET = "bench"


def _child(conn: multiprocessing.connection.Connection, workdir: str) -> None:
    import logging

    from bridge.devstack import X509_ROLE_ARN, DevStack

    logging.basicConfig(level=logging.ERROR)
    stack = DevStack(Path(workdir), x509=True).start()
    try:
        conn.send({"socket": stack.workload_socket_uri, "url": stack.aws_sts_url,
                   "anchor": stack.trust_anchor_arn, "profile": stack.profile_arn,
                   "role": X509_ROLE_ARN})
        conn.recv()
        conn.send(len(stack.aws.roles_anywhere.requests))
        conn.recv()
    except (EOFError, OSError):
        pass
    finally:
        stack.stop()


def _direct(info: dict[str, Any], outdir: Path) -> tuple[Callable[[], None], Any]:
    import urllib3
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import Encoding
    from spiffe import WorkloadApiClient, X509Source

    client = WorkloadApiClient(info["socket"])
    source = X509Source(workload_api_client=client, timeout_in_seconds=10)
    http = urllib3.PoolManager(retries=False, timeout=10)
    host = info["url"].split("://", 1)[1]
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
        svid = source.get_x509_context().default_svid
        body = json.dumps({"trustAnchorArn": info["anchor"], "profileArn": info["profile"],
                           "roleArn": info["role"], "durationSeconds": 3600}).encode()
        amz_date = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        headers = {"content-type": "application/json", "host": host,
                   "x-amz-date": amz_date,
                   "x-amz-x509": base64.b64encode(svid.leaf.public_bytes(Encoding.DER)).decode()}
        if len(svid.cert_chain) > 1:
            headers["x-amz-x509-chain"] = ",".join(
                base64.b64encode(c.public_bytes(Encoding.DER)).decode()
                for c in svid.cert_chain[1:])
        signed = sorted(headers)
        canonical = "\n".join(["POST", "/sessions", "",
                               "".join(f"{n}:{headers[n]}\n" for n in signed),
                               ";".join(signed), hashlib.sha256(body).hexdigest()])
        scope = f"{amz_date[:8]}/us-east-1/rolesanywhere/aws4_request"
        to_sign = "\n".join(["AWS4-X509-ECDSA-SHA256", amz_date, scope,
                             hashlib.sha256(canonical.encode()).hexdigest()])
        signature = svid.private_key.sign(to_sign.encode(), ec.ECDSA(hashes.SHA256())).hex()
        headers["authorization"] = (
            f"AWS4-X509-ECDSA-SHA256 Credential={svid.leaf.serial_number}/{scope}, "
            f"SignedHeaders={';'.join(signed)}, Signature={signature}")
        response = http.request("POST", info["url"] + "/sessions", body=body, headers=headers)
        if response.status != 201:
            raise RuntimeError(f"direct CreateSession: {response.status} {response.data[:200]!r}")
        c = json.loads(response.data)["credentialSet"][0]["credentials"]
        doc = {"Version": 1, "AccessKeyId": c["accessKeyId"],
               "SecretAccessKey": c["secretAccessKey"], "SessionToken": c["sessionToken"],
               "Expiration": c["expiration"]}
        atomic_write(outdir / f"{TARGET}.json", json.dumps(doc, indent=2).encode())
        ini = (f"# Written by spiffe-bridge; rewritten on every refresh. Do not edit.\n\n"
               f"[{TARGET}]\n# expires {c['expiration']}\n"
               f"aws_access_key_id = {c['accessKeyId']}\n"
               f"aws_secret_access_key = {c['secretAccessKey']}\n"
               f"aws_session_token = {c['sessionToken']}\n")
        atomic_write(outdir / "credentials", ini.encode())

    return refresh, (source, client)


def _config(work: Workdir, info: dict[str, Any]) -> Path:
    import yaml

    path = work.tmp / "bridge.yaml"
    path.write_text(yaml.safe_dump({
        "workload_api": {"socket": info["socket"], "timeout": "10s"},
        "outputs": {"directory": str(work.shm / "bridge"),
                    "allow_non_tmpfs": not work.on_tmpfs},
        "grpc": {"socket": f"unix://{work.tmp}/bridge.sock"},
        # The engine's cost, not the quota's: one bridge alone in its scope would get
        # 75 % of CreateSession's 10/s, a call per 133 ms, which a loop of refreshes meets.
        "refresh": {"scope_rates": {
            f"aws_rolesanywhere {info['anchor'].split(':')[4]} us-east-1": 1e6}},
        "targets": [{"name": TARGET, "source": "x509", "aws": {
            "trust_anchor_arn": info["anchor"], "profile_arn": info["profile"],
            "role_arn": info["role"], "region": "us-east-1", "endpoint": info["url"]}}]}))
    return path


async def _measure(config_path: Path, direct: Callable[[], None], refreshes: int,
                   warmup: int) -> dict[str, Any]:
    from bridge.app import daemon as d
    from bridge.config import load_config
    from bridge.logs import Redactor, setup_logging

    config = load_config(config_path)
    redactor = Redactor()
    devnull = open(os.devnull, "w")  # noqa: SIM115 - closed below
    setup_logging(redactor, level="INFO", stream=devnull)
    d.use_worker_threads(config)
    daemon = d.build(config, redactor=redactor)
    d._prepare(daemon)
    (pipeline,) = daemon.scheduler._pipelines
    times: dict[str, list[float]] = {"bridge": [], "direct": []}
    cpu = {"bridge": 0.0, "direct": 0.0}

    async def bridge() -> None:
        status = await daemon.scheduler.refresh(pipeline)
        if status.consecutive_failures:
            raise RuntimeError(f"bridge refresh failed: {status.last_error_detail}")
        if await daemon.writer.flush():
            raise RuntimeError("bridge write failed")

    try:
        for i in range(warmup + refreshes):
            for side in (("bridge", "direct") if i % 2 == 0 else ("direct", "bridge")):
                c0, t0 = time.process_time(), time.perf_counter()
                if side == "bridge":
                    await bridge()
                else:
                    direct()
                if i >= warmup:
                    times[side].append(time.perf_counter() - t0)
                    cpu[side] += time.process_time() - c0
    finally:
        daemon.close_sources()
        devnull.close()
    return {"times": times, "cpu_ms": {k: v / refreshes * 1000 for k, v in cpu.items()}}


def run(refreshes: int, warmup: int) -> dict[str, Any]:
    work = Workdir("sbra-")
    ctx = multiprocessing.get_context("spawn")
    conn, child = ctx.Pipe()
    stack = ctx.Process(target=_child, args=(child, str(work.tmp / "stack")), daemon=True)
    stack.start()
    try:
        if not conn.poll(60):
            raise RuntimeError("the dev stack did not start within 60 s")
        info = conn.recv()
        direct, held = _direct(info, work.shm / "direct")
        try:
            measured = asyncio.run(_measure(_config(work, info), direct, refreshes, warmup))
        finally:
            for thing in held:
                thing.close()
        conn.send("count")
        sessions = conn.recv()
        conn.send("stop")
    finally:
        stack.join(30)
        if stack.is_alive():
            stack.terminate()
        work.cleanup()
    out: dict[str, Any] = {"refreshes": refreshes, "warmup": warmup,
                           "create_sessions_at_emulator": sessions,
                           "cpu_ms_per_refresh": measured["cpu_ms"]}
    for side, values in measured["times"].items():
        out[side] = {"median_ms": median(values) * 1000,
                     "p99_ms": percentile(values, 0.99) * 1000, "min_ms": min(values) * 1000}
    out["ratio_median"] = out["bridge"]["median_ms"] / out["direct"]["median_ms"]
    out["ratio_p99"] = out["bridge"]["p99_ms"] / out["direct"]["p99_ms"]
    return out


def table(r: dict[str, Any]) -> str:
    b, d = r["bridge"], r["direct"]
    return "\n".join([
        f"Roles Anywhere refresh: {r['refreshes']} refreshes per side, interleaved ABBA "
        f"({r['warmup']} warm-up each), dev stack without added latency "
        f"({r['create_sessions_at_emulator']} CreateSession calls accepted)",
        f"  {'':8} {'median ms':>10} {'p99 ms':>8} {'min ms':>8}",
        f"  {'bridge':8} {b['median_ms']:>10.2f} {b['p99_ms']:>8.2f} {b['min_ms']:>8.2f}",
        f"  {'direct':8} {d['median_ms']:>10.2f} {d['p99_ms']:>8.2f} {d['min_ms']:>8.2f}",
        f"  ratio median {r['ratio_median']:.3f}, p99 {r['ratio_p99']:.3f}",
        f"  CPU of this process per refresh: bridge {r['cpu_ms_per_refresh']['bridge']:.2f} "
        f"ms, direct {r['cpu_ms_per_refresh']['direct']:.2f} ms",
    ])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--refreshes", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    results = run(args.refreshes, args.warmup)
    report(results, table(results), args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
