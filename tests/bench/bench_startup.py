"""Start-up: process start to the first credential written, `python -m bridge run`.

A dev stack (its own process, no added latency) serves one AWS target. Each run starts
the daemon on a fresh output directory and times from `Popen` to the moment
`aws/<target>.json` exists (polled every 2 ms), then stops it. Interleaved with each
run, the baseline: a straight-line script as its own process (`python -c`: import
py-spiffe and boto3, fetch the JWT-SVID, AssumeRoleWithWebIdentity, write the JSON
atomically), timed the same way. Bytecode is cached for both, as an installed package
has it (see _common.bytecode_env).

Also printed: where the daemon's time goes (from its log timestamps) and the top
import-time offenders of `python -X importtime -m bridge run` (cumulative, by package).

    python -m tests.bench.bench_startup [--runs 7] [--json FILE]
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.bench._common import (
    PYTHON,
    ROOT,
    Daemon,
    Workdir,
    aws_targets,
    bytecode_env,
    median,
    report,
    warm_bytecode,
    write_config,
)
from tests.bench._stack import StackProcess

TARGET = "t0"
TIMEOUT = 30.0
_STAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) \S+\s+\S+: (.*)$")
EVENTS = (("serving gRPC", "gRPC served"), ("serving metrics", "HTTP served"),
          ("spiffe-bridge running", "refresh loop started"), ("refreshed", "first refresh done"))

DIRECT = """
import json, os, sys, time
import boto3, botocore
from botocore.config import Config
from spiffe import WorkloadApiClient
socket, url, role, out = sys.argv[1:5]
svid = WorkloadApiClient(socket).fetch_jwt_svid({"sts.amazonaws.com"})
sts = boto3.client("sts", region_name="us-east-1", endpoint_url=url,
                   config=Config(signature_version=botocore.UNSIGNED))
c = sts.assume_role_with_web_identity(RoleArn=role, RoleSessionName="bench",
                                      WebIdentityToken=svid.token)["Credentials"]
doc = {"Version": 1, "AccessKeyId": c["AccessKeyId"], "SecretAccessKey": c["SecretAccessKey"],
       "SessionToken": c["SessionToken"], "Expiration": c["Expiration"].isoformat()}
fd = os.open(out + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
os.write(fd, json.dumps(doc, indent=2).encode()); os.fsync(fd); os.close(fd)
os.replace(out + ".tmp", out)
time.sleep(30)  # stays up like a daemon would, until stopped
"""


def _until_exists(path: Path, started: float, alive: Any) -> float:
    deadline = started + TIMEOUT
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} not written within {TIMEOUT:.0f}s")
        alive()
        time.sleep(0.002)
    return time.monotonic() - started


def _bridge_once(stack: StackProcess, work: Workdir, index: int,
                 env: dict[str, str], importtime: bool = False) -> dict[str, Any]:
    outputs = work.shm / f"b{index}"
    config = write_config(work.tmp / f"s{index}.yaml", outputs=outputs,
                          workload_socket=stack.info["workload_socket"],
                          on_tmpfs=work.on_tmpfs, grpc_socket=work.tmp / f"g{index}.sock",
                          targets=aws_targets(1, stack.info["aws_sts_url"],
                                              stack.info["role_arn"]))
    log = work.tmp / f"s{index}.log"
    daemon = Daemon(config, log, env, argv_prefix=())
    if importtime:
        daemon.argv.insert(1, "-X")
        daemon.argv.insert(2, "importtime")
    wall0 = time.time()
    started = daemon.start()
    try:
        elapsed = _until_exists(outputs / "aws" / f"{TARGET}.json", started, daemon.check_alive)
    finally:
        daemon.stop()
    text = log.read_text(errors="replace")
    return {"seconds": elapsed, "events": _events(text, wall0), "log": text}


def _events(text: str, wall0: float) -> dict[str, float]:
    """Seconds after process start at which the daemon logged each milestone."""
    found: dict[str, float] = {}
    for line in text.splitlines():
        m = _STAMP.match(line)
        if not m:
            continue
        stamp = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
        for needle, label in EVENTS:
            if label not in found and m.group(2).startswith(needle):
                found[label] = stamp - wall0
    return found


def _direct_once(stack: StackProcess, work: Workdir, index: int, env: dict[str, str]) -> float:
    out = work.shm / f"d{index}.json"
    info = stack.info
    started = time.monotonic()
    proc = subprocess.Popen([PYTHON, "-c", DIRECT, info["workload_socket"], info["aws_sts_url"],
                             info["role_arn"], str(out)], env=env, cwd=ROOT,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)

    def alive() -> None:
        if proc.poll() is not None:
            raise RuntimeError(f"direct script exited: {proc.stderr.read()!r}"  # type: ignore[union-attr]
                               if proc.stderr else "direct script exited")
    try:
        return _until_exists(out, started, alive)
    finally:
        proc.terminate()
        proc.wait(10)


def importtime_top(log: str, n: int = 12) -> dict[str, list[tuple[str, float]]]:
    """From `-X importtime` lines: top modules by cumulative time among those imported by
    the bridge or at top level, and the top third-party packages by summed self time."""
    rows = []
    for line in log.splitlines():
        if line.startswith("import time:") and "|" in line and "self [us]" not in line:
            _, self_us, cumulative_us, raw = re.split(r"[:|]", line, maxsplit=3)
            name = raw[1:]  # one separator space, then two spaces per nesting level
            depth = (len(name) - len(name.lstrip())) // 2
            rows.append((name.strip(), int(self_us), int(cumulative_us), depth))
    total_self = sum(r[1] for r in rows)
    by_package: dict[str, int] = {}
    for name, self_us, _, _ in rows:
        by_package[name.split(".")[0]] = by_package.get(name.split(".")[0], 0) + self_us
    top_cumulative = sorted(((name, cumulative / 1e6) for name, _, cumulative, depth in rows
                             if depth <= 1), key=lambda r: -r[1])[:n]
    return {"total_s": [("all imports (sum of self)", total_self / 1e6)],
            "cumulative": top_cumulative,
            "by_package_self": sorted(((k, v / 1e6) for k, v in by_package.items()),
                                      key=lambda r: -r[1])[:n]}


def run(runs: int) -> dict[str, Any]:
    work = Workdir("sbst-")
    env = bytecode_env()
    warm_bytecode(env)
    subprocess.run([PYTHON, "-c", "import boto3, spiffe, botocore.config"], env=env,
                   check=True, timeout=60)
    stack = StackProcess(work.tmp / "stack").start()
    bridge: list[dict[str, Any]] = []
    direct: list[float] = []
    try:
        for i in range(runs):
            if i % 2 == 0:
                bridge.append(_bridge_once(stack, work, i, env))
                direct.append(_direct_once(stack, work, i, env))
            else:
                direct.append(_direct_once(stack, work, i, env))
                bridge.append(_bridge_once(stack, work, i, env))
        imports = importtime_top(_bridge_once(stack, work, runs, env, importtime=True)["log"])
    finally:
        stack.stop()
        work.cleanup()
    seconds = [b["seconds"] for b in bridge]
    events = {label: median(b["events"][label] for b in bridge if label in b["events"])
              for _, label in EVENTS if any(label in b["events"] for b in bridge)}
    return {"runs": runs, "bridge_s": seconds, "direct_s": direct,
            "median_s": median(seconds), "direct_median_s": median(direct),
            "ratio": median(seconds) / median(direct), "events_median_s": events,
            "imports": imports}


def table(r: dict[str, Any]) -> str:
    lines = [
        f"Start-up to first credential written ({r['runs']} runs each, interleaved, medians; "
        f"all imports {r['imports']['total_s'][0][1] * 1000:.0f} ms)",
        f"  bridge (python -m bridge run)   {r['median_s']:.3f} s  (target < 1.0 s; runs "
        f"{', '.join(f'{s:.2f}' for s in r['bridge_s'])})",
        f"  direct script (same calls)      {r['direct_median_s']:.3f} s  ratio {r['ratio']:.2f}",
        "  daemon milestones (s after process start, from its log): " + ", ".join(
            f"{k} {v:.3f}" for k, v in r["events_median_s"].items()),
        "  import time, cumulative (top level of `python -X importtime -m bridge run`):",
    ]
    lines += [f"    {name:<44} {s * 1000:6.0f} ms" for name, s in r["imports"]["cumulative"]]
    lines.append("  import time by package (sum of the self times of its modules):")
    lines += [f"    {name:<44} {s * 1000:6.0f} ms" for name, s in
              r["imports"]["by_package_self"][:10]]
    lines.append("  (the __editable__ finder exists only in this editable install; the SPIFFE, "
                 "gRPC, botocore and prometheus imports are needed before the first credential)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    results = run(args.runs)
    report(results, table(results), args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
