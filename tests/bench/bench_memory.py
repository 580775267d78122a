"""Sidecar memory: RSS of a one-target AWS daemon and of a one-target GCP daemon against
the import floor of exactly the libraries each needs, measured in the same run.

The floor is a `python -c "import ..."` of what that daemon cannot do without: its
cloud's SDK (botocore; google-auth with its identity-pool and impersonation modules),
grpc, prometheus_client, py-spiffe, PyYAML, PyJWT, cryptography. Each daemon runs on the
dev stack until its first credential is written and 3 s more; RSS and threads are read
from /proc. It also says whether the other cloud's SDK was imported (it must not be).

Target: each daemon <= 1.15 x its floor.

    python -m tests.bench.bench_memory [--runs 3] [--json FILE]
"""

from __future__ import annotations

import argparse
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
    report,
    rss_bytes,
    threads,
    warm_bytecode,
    write_config,
)
from tests.bench._stack import StackProcess

COMMON = "grpc, prometheus_client, spiffe, yaml, jwt, cryptography"
FLOORS = {
    "aws": f"import botocore.session, {COMMON}",
    "gcp": "import google.auth, google.auth.identity_pool, google.auth.impersonated_credentials, "
           f"google.auth.transport.requests, {COMMON}",
}
OTHER = {"aws": "google.auth", "gcp": "botocore"}


def _floor(imports: str, env: dict[str, str]) -> int:
    script = (f"{imports}\nfor line in open('/proc/self/status'):\n"
              "    if line.startswith('VmRSS:'): print(int(line.split()[1]) * 1024)")
    out = subprocess.run([PYTHON, "-c", script], env=env, cwd=ROOT, capture_output=True,
                         text=True, check=True, timeout=60)
    return int(out.stdout.strip())


def _target(cloud: str, info: dict[str, Any]) -> dict[str, Any]:
    if cloud == "aws":
        return aws_targets(1, info["aws_sts_url"], info["role_arn"])[0]
    from bridge.devstack import DEMO_SERVICE_ACCOUNT, GCP_PROVIDER

    return {"name": "t0", "gcp": {"workload_identity_provider": GCP_PROVIDER,
                                  "service_account": DEMO_SERVICE_ACCOUNT,
                                  "sts_endpoint": info["gcp_sts_url"],
                                  "iam_credentials_endpoint": info["gcp_iam_url"]}}


def _daemon(cloud: str, work: Workdir, info: dict[str, Any], env: dict[str, str],
            run: int) -> dict[str, Any]:
    outputs = work.shm / f"{cloud}-{run}"
    config = write_config(work.tmp / f"{cloud}-{run}.yaml",
                          workload_socket=info["workload_socket"], outputs=outputs,
                          on_tmpfs=work.on_tmpfs, targets=[_target(cloud, info)],
                          grpc_socket=work.tmp / f"{cloud}-{run}.sock")
    log = work.tmp / f"{cloud}-{run}.log"
    daemon = Daemon(config, log, {**env, "PYTHONPROFILEIMPORTTIME": "1"})
    daemon.start()
    try:
        deadline = time.monotonic() + 60
        while not any((outputs / cloud).glob("t0*")):
            daemon.check_alive()
            if time.monotonic() > deadline:
                raise RuntimeError(f"{cloud}: no first credential within 60 s")
            time.sleep(0.1)
        time.sleep(3.0)
        rss, count = rss_bytes(daemon.pid), threads(daemon.pid)
    finally:
        daemon.stop()
    imported = {line.rsplit("|", 1)[1].strip() for line in log.read_text(errors="replace")
                .splitlines() if line.startswith("import time:") and "|" in line}
    return {"rss": rss, "threads": count, "other_cloud_imported": OTHER[cloud] in imported}


def run(runs: int) -> dict[str, Any]:
    work = Workdir("sb-bench-mem-")
    stack = StackProcess(work.tmp / "stack").start()
    results: dict[str, Any] = {"runs": runs, "clouds": {}}
    try:
        env = bytecode_env()
        warm_bytecode(env)
        samples: dict[str, dict[str, list[Any]]] = {c: {"rss": [], "floor": [], "threads": [],
                                                        "other": []} for c in FLOORS}
        for i in range(runs):
            for cloud, imports in FLOORS.items():  # interleaved: daemon, then its floor
                measured = _daemon(cloud, work, stack.info, env, i)
                samples[cloud]["rss"].append(measured["rss"])
                samples[cloud]["threads"].append(measured["threads"])
                samples[cloud]["other"].append(measured["other_cloud_imported"])
                samples[cloud]["floor"].append(_floor(imports, env))
    finally:
        stack.stop()
        work.cleanup()
    for cloud, s in samples.items():
        rss, floor = median(s["rss"]), median(s["floor"])
        results["clouds"][cloud] = {"rss_mb": rss / 2**20, "floor_mb": floor / 2**20,
                                    "ratio": rss / floor, "threads": median(s["threads"]),
                                    "other_cloud_imported": any(s["other"])}
    return results


def table(r: dict[str, Any]) -> str:
    lines = [f"Sidecar memory, one target, after the first credential ({r['runs']} runs, "
             "medians)",
             f"{'daemon':<8} {'RSS MB':>7} {'floor MB':>9} {'x floor':>8} {'threads':>8}  "
             "other cloud's SDK imported"]
    for cloud, c in r["clouds"].items():
        lines.append(f"{cloud:<8} {c['rss_mb']:>7.1f} {c['floor_mb']:>9.1f} {c['ratio']:>8.2f} "
                     f"{c['threads']:>8.0f}  {'YES' if c['other_cloud_imported'] else 'no'}")
    lines.append("target: each <= 1.15 x its floor; the other cloud's SDK never imported")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    results = run(max(1, min(args.runs, 20)))
    report(results, table(results), args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
