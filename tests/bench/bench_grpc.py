"""Read path: GetCredential over the unix socket, the bridge vs a minimal grpcio server.

Both servers run in their own process; one load process drives them with 1, 8 and 64
concurrent callers (grpc.aio tasks on one channel each), a bounded number of calls per
round, rounds interleaved bridge/minimal/bridge/... so drift hits both alike. The
minimal server is grpc.aio (the framework the bridge uses) with one generic handler that
returns a constant, pre-serialized GetCredentialResponse of exactly the bridge's size.
A third row times the bridge with `allowed_callers`, the caller sending a JWT-SVID.

    python -m tests.bench.bench_grpc [--calls 3000] [--rounds 3] [--json FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

CONCURRENCY = (1, 8, 64)
TARGET = "bench"


def _credential_status(now: float) -> Any:
    from bridge.model import AwsCredentials, Credential, State, TargetStatus

    aws = AwsCredentials(access_key_id="ASIA" + "B" * 16, secret_access_key="s" * 40,
                         session_token="t" * 700, expires_at=now + 3600,
                         assumed_role_arn="arn:aws:sts::111122223333:assumed-role/bench/x")
    credential = Credential(target=TARGET, issued_at=now, expires_at=now + 3600,
                            svid_expires_at=now + 300, aws=aws)
    return TargetStatus(name=TARGET, state=State.FRESH, credential=credential,
                        last_success=now, delivered=True)


def _serve_bridge(socket: str, guarded: bool, bundle: bytes, ready: Any) -> None:
    """The bridge's own GrpcService over a store holding one AWS credential."""
    from prometheus_client import CollectorRegistry
    from spiffe import JwtBundle, JwtBundleSet, TrustDomain

    from bridge.config import AwsTarget, TargetConfig
    from bridge.config_serving import GrpcConfig
    from bridge.grpc_api.callers import CallerVerifier
    from bridge.grpc_api.server import GrpcService
    from bridge.metrics import Metrics
    from bridge.store import CredentialStore

    store = CredentialStore([TARGET])
    status = _credential_status(time.time())
    assert status.credential is not None
    store.succeeded(TARGET, status.credential, time.time())
    td = TrustDomain("example.org")
    bundles = JwtBundleSet({td: JwtBundle.parse(td, bundle)})
    callers = ("spiffe://example.org/bench",) if guarded else ()
    target = TargetConfig(name=TARGET, audience="sts.amazonaws.com",
                          aws=AwsTarget(role_arn="arn:aws:iam::111122223333:role/bench",
                                        region="us-east-1"), allowed_callers=callers)
    service = GrpcService(GrpcConfig(socket=socket, max_concurrent_rpcs=1000), [target],
                          store=store, now=time.time,
                          verifier=CallerVerifier(lambda: bundles, audience="spiffe-bridge",
                                                  now=time.time),
                          metrics=Metrics(CollectorRegistry()))
    service.start()
    ready.set()
    while True:
        time.sleep(3600)


def _serve_minimal(socket: str, body: bytes, ready: Any) -> None:
    """The floor: grpc.aio, one generic handler, a constant response of the same size."""
    import grpc

    async def get(request: bytes, context: Any) -> bytes:
        return body

    async def main() -> None:
        handler = grpc.method_handlers_generic_handler("spiffebridge.v1.CredentialService", {
            "GetCredential": grpc.unary_unary_rpc_method_handler(
                get, request_deserializer=None, response_serializer=None)})
        server = grpc.aio.server(maximum_concurrent_rpcs=1000)
        server.add_generic_rpc_handlers((handler,))
        server.add_insecure_port(socket)
        await server.start()
        ready.set()
        await server.wait_for_termination()

    asyncio.run(main())


def _load(socket: str, concurrency: int, calls: int, token: str | None) -> dict[str, float]:
    """Run `calls` GetCredential calls from `concurrency` tasks; latency per call."""
    import grpc

    from bridge._proto.spiffebridge.v1 import credentials_pb2 as pb
    from bridge._proto.spiffebridge.v1 import credentials_pb2_grpc as pb_grpc

    metadata = (("authorization", f"Bearer {token}"),) if token else None

    async def main() -> dict[str, float]:
        async with grpc.aio.insecure_channel(socket) as channel:
            stub = pb_grpc.CredentialServiceStub(channel)
            request = pb.GetCredentialRequest(target=TARGET)
            await stub.GetCredential(request, metadata=metadata)  # connect, warm
            latencies: list[float] = []
            per_task = calls // concurrency

            async def worker() -> None:
                for _ in range(per_task):
                    t0 = time.perf_counter()
                    response = await stub.GetCredential(request, metadata=metadata)
                    latencies.append(time.perf_counter() - t0)
                    assert response.credential.aws.access_key_id
            start = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(concurrency)))
            elapsed = time.perf_counter() - start
        latencies.sort()
        return {"rps": len(latencies) / elapsed,
                "p50_ms": latencies[len(latencies) // 2] * 1000,
                "p99_ms": latencies[int(len(latencies) * 0.99) - 1] * 1000}

    return asyncio.run(main())


def _response_body() -> bytes:
    from bridge._proto.spiffebridge.v1 import credentials_pb2 as pb
    from bridge.grpc_api.convert import credential_message

    now = time.time()
    return pb.GetCredentialResponse(
        credential=credential_message(_credential_status(now), now)).SerializeToString()


def _start(target: Callable[..., None], *args: Any) -> multiprocessing.Process:
    ready = multiprocessing.get_context("spawn").Event()
    process = multiprocessing.get_context("spawn").Process(target=target, args=(*args, ready),
                                                            daemon=True)
    process.start()
    deadline = time.monotonic() + 30
    while not ready.wait(0.1):
        if not process.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"{target.__name__} did not start")
    return process


def run(calls: int, rounds: int) -> dict[str, Any]:
    from bridge.devstack.authority import JwtAuthority

    authority = JwtAuthority("example.org")
    bundle = json.dumps(authority.spiffe_bundle()).encode()
    token = authority.mint("spiffe://example.org/bench", ["spiffe-bridge"], 3600)
    workdir = Path(tempfile.mkdtemp(prefix="sb-bench-", dir="/tmp"))
    sockets = {name: f"unix://{workdir}/{name}.sock" for name in ("bridge", "guarded",
                                                                   "minimal")}
    body = _response_body()
    servers = [
        _start(_serve_bridge, sockets["bridge"], False, bundle),
        _start(_serve_bridge, sockets["guarded"], True, bundle),
        _start(_serve_minimal, sockets["minimal"], body),
    ]
    results: dict[str, Any] = {"message_bytes": len(body), "calls": calls, "rounds": rounds,
                               "rows": []}
    pool = multiprocessing.get_context("spawn").Pool(1)
    try:
        for concurrency in CONCURRENCY:
            samples: dict[str, list[dict[str, float]]] = {k: [] for k in sockets}
            for _ in range(rounds):
                for name in ("bridge", "minimal", "guarded"):
                    samples[name].append(pool.apply(_load, (
                        sockets[name], concurrency, calls,
                        token if name == "guarded" else None)))
            row = {"concurrency": concurrency}
            for name, runs in samples.items():
                row[name] = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
            row["ratio"] = row["bridge"]["rps"] / row["minimal"]["rps"]
            row["guarded_ratio"] = row["guarded"]["rps"] / row["minimal"]["rps"]
            results["rows"].append(row)
    finally:
        pool.terminate()
        for server in servers:
            server.terminate()
    return results


def table(results: dict[str, Any]) -> str:
    lines = [f"GetCredential over a unix socket ({results['message_bytes']}-byte response, "
             f"{results['calls']} calls x {results['rounds']} interleaved rounds, medians)",
             f"{'clients':>7} {'bridge rps':>11} {'minimal rps':>12} {'ratio':>6} "
             f"{'p50 ms b/m':>12} {'p99 ms b/m':>12} {'guarded rps':>12} {'ratio':>6}"]
    for r in results["rows"]:
        b, m, g = r["bridge"], r["minimal"], r["guarded"]
        lines.append(f"{r['concurrency']:>7} {b['rps']:>11.0f} {m['rps']:>12.0f} "
                     f"{r['ratio']:>6.2f} {b['p50_ms']:>5.2f}/{m['p50_ms']:<6.2f} "
                     f"{b['p99_ms']:>5.2f}/{m['p99_ms']:<6.2f} {g['rps']:>12.0f} "
                     f"{r['guarded_ratio']:>6.2f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    results = run(args.calls, args.rounds)
    results.update(python=sys.version.split()[0], cores=os.cpu_count())
    print(table(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
