"""Per-workload credentials through the SPIFFE Broker API: time to a workload's first
credential (cold: the agent attests the PID and mints its JWT-SVID, then the STS
exchange), warm (cached: attestation only), and a configured target's GetCredential
(the store only), side by side.

Real SPIRE v1.15.3 with `experimental.broker` and the bridge as its broker
(tests/support/broker_node.py; the dev stack's STS emulator, no added latency). Each
cold sample is a new identity: a new uid with its own registration entry, its first
call; the same process then makes the warm calls on its channel. The configured target
is read from this process on the bridge's main socket. Times are taken inside the
calling process, around the RPC alone.

    python -m tests.bench.bench_broker [--identities 5] [--calls 200] [--json FILE]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import grpc

from bridge._proto.spiffebridge.v1 import credentials_pb2 as pb
from bridge._proto.spiffebridge.v1 import credentials_pb2_grpc as pb_grpc
from tests.bench._common import machine, median, percentile, report
from tests.support import workloads as wl
from tests.support.broker_node import CONFIGURED, RULE, broker_node
from tests.support.spire import TRUST_DOMAIN, find_spire

FIRST_UID = 3101


def run(identities: int, calls: int) -> dict[str, Any]:
    binaries = find_spire()
    if binaries is None:
        raise SystemExit("SPIRE v1.15.3 binaries not found (tests/tools/install-spire.sh)")
    with broker_node(binaries) as node:
        uids = [FIRST_UID + i for i in range(identities)]
        for uid in uids:
            node.add_workload(uid, f"spiffe://{TRUST_DOMAIN}/ns/bench{uid}/sa/app")
        time.sleep(3.0)  # the agent syncs entries every second
        cold: list[float] = []
        warm: list[float] = []
        for uid in uids:
            seconds = wl.run_as(uid, wl.grpc_latencies, node.workload_socket, RULE, calls + 1,
                                timeout=120)
            cold.append(seconds[0])
            warm.extend(seconds[1:])
        configured: list[float] = []
        with grpc.insecure_channel(f"unix:{node.grpc_socket}") as channel:
            stub = pb_grpc.CredentialServiceStub(channel)
            stub.GetCredential(pb.GetCredentialRequest(target=CONFIGURED), timeout=10)
            for _ in range(calls * identities):
                start = time.perf_counter()
                stub.GetCredential(pb.GetCredentialRequest(target=CONFIGURED), timeout=10)
                configured.append(time.perf_counter() - start)
    def summary(values: list[float]) -> dict[str, float]:
        return {"n": len(values), "median_ms": median(values) * 1000,
                "p99_ms": percentile(values, 99) * 1000}
    return {"machine": machine(), "cold": summary(cold), "warm": summary(warm),
            "configured": summary(configured),
            "warm_vs_configured": median(warm) / median(configured),
            "cold_vs_warm": median(cold) / median(warm)}


def table(r: dict[str, Any]) -> str:
    lines = [f"{'path':<44} {'n':>6} {'median':>10} {'p99':>10}"]
    for key, name in (("cold", "workload, first credential (cold)"),
                      ("warm", "workload, cached (warm: attested per call)"),
                      ("configured", "configured target GetCredential")):
        s = r[key]
        lines.append(f"{name:<44} {s['n']:>6} {s['median_ms']:>8.2f}ms {s['p99_ms']:>8.2f}ms")
    lines.append(f"warm / configured: {r['warm_vs_configured']:.1f}x;  "
                 f"cold / warm: {r['cold_vs_warm']:.1f}x")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--identities", type=int, default=5)
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    results = run(args.identities, args.calls)
    report(results, table(results), args.json)


if __name__ == "__main__":
    main()
