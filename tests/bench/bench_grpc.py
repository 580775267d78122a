"""Read path: GetCredential over the unix socket vs minimal grpcio servers and a real SPIRE
agent's FetchJWTSVID, at 1, 8 and 64 concurrent clients.

Every server runs in its own process; one load process (grpc.aio, one channel, N tasks)
drives them, a bounded number of calls per round, rounds interleaved (the order reversed
every other round) so drift hits all alike. rps is the median of the rounds; p50/p99
are over every call of every round; server CPU per call is read from /proc (the steadier
figure when other work shares the two cores). Ratios are the median over rounds of the
ratio within each round.

- bridge: the bridge's own `GrpcService` over a store holding one AWS credential.
- guarded: the same with `allowed_callers`; the caller sends its JWT-SVID (cached check).
- min-bytes: grpc.aio with one generic handler returning a constant, pre-serialized
  GetCredentialResponse of exactly the bridge's size (no serialization at all: the floor).
- min-servicer: grpc.aio with the *generated* servicer returning a constant
  GetCredentialResponse message (serialized by grpc per call, like any servicer).
- spire-agent: SPIRE v1.15.3's agent answering FetchJWTSVID (security header, unix
  workload attestation, its JWT-SVID cache) on this machine, started by the bench
  (with the real-SPIRE tests' harness, tests/integration/spire/_spire.py); skipped, with
  the reason, when the binaries are missing.

Targets: bridge rps >= 0.95 x each minimal server's, guarded >= 0.90 x; bridge p50 <= the
agent's p50.

    python -m tests.bench.bench_grpc [--calls 3000] [--rounds 3] [--json FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.bench._common import cpu_seconds, percentile, report

CONCURRENCY = (1, 8, 64)
TARGET = "bench"
SERVERS = ("bridge", "min-bytes", "min-servicer", "guarded", "spire-agent")
SPIRE_AUDIENCE = "bench"


def _credential_status(now: float) -> Any:
    from bridge.clouds.aws import AwsCredentials
    from bridge.model import Credential, State, TargetStatus

    aws = AwsCredentials(access_key_id="ASIA" + "B" * 16, secret_access_key="s" * 40,
                         session_token="t" * 700, expires_at=now + 3600,
                         assumed_role_arn="arn:aws:sts::111122223333:assumed-role/bench/x")
    credential = Credential(target=TARGET, issued_at=now, expires_at=now + 3600,
                            svid_expires_at=now + 300, material=aws,
                            deadline=time.monotonic() + 3600, received=time.monotonic())
    return TargetStatus(name=TARGET, state=State.FRESH, credential=credential,
                        last_success=now, delivered=True)


def _serve_bridge(socket: str, guarded: bool, bundle: bytes, ready: Any) -> None:
    """The bridge's own GrpcService over a store holding one AWS credential."""
    from prometheus_client import CollectorRegistry
    from spiffe import JwtBundle, JwtBundleSet, TrustDomain

    from bridge.app.daemon import served_target
    from bridge.clouds.aws import AwsHopConfig
    from bridge.config import GrpcConfig, TargetConfig
    from bridge.metrics import Metrics
    from bridge.serving.grpc.callers import CallerVerifier
    from bridge.serving.grpc.server import GrpcService
    from bridge.store import CredentialStore

    store = CredentialStore([TARGET])
    status = _credential_status(time.time())
    assert status.credential is not None
    store.succeeded(TARGET, status.credential, time.time())
    td = TrustDomain("example.org")
    bundles = JwtBundleSet({td: JwtBundle.parse(td, bundle)})
    callers = ("spiffe://example.org/bench",) if guarded else ()
    target = TargetConfig(name=TARGET, audience="sts.amazonaws.com",
                          hops=(AwsHopConfig(role_arn="arn:aws:iam::111122223333:role/bench",
                                             region="us-east-1"),), allowed_callers=callers)
    service = GrpcService(GrpcConfig(socket=socket, max_concurrent_rpcs=1000),
                          [served_target(target)],
                          store=store, now=time.monotonic,
                          verifier=CallerVerifier(lambda: bundles, audience="spiffe-bridge",
                                                  now=time.time),
                          metrics=Metrics(CollectorRegistry()))
    service.start()
    ready.set()
    while True:
        time.sleep(3600)


def _serve_minimal_bytes(socket: str, body: bytes, ready: Any) -> None:
    """The floor: grpc.aio, one generic handler, a constant pre-serialized response."""
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


def _serve_minimal_servicer(socket: str, body: bytes, ready: Any) -> None:
    """The idiomatic minimal server: the generated servicer, a constant message."""
    import grpc

    from bridge._proto.spiffebridge.v1 import credentials_pb2 as pb
    from bridge._proto.spiffebridge.v1 import credentials_pb2_grpc as pb_grpc

    response = pb.GetCredentialResponse.FromString(body)

    class Servicer(pb_grpc.CredentialServiceServicer):  # type: ignore[misc]
        async def GetCredential(self, request: Any, context: Any) -> Any:
            return response

    async def main() -> None:
        server = grpc.aio.server(maximum_concurrent_rpcs=1000)
        pb_grpc.add_CredentialServiceServicer_to_server(Servicer(), server)
        server.add_insecure_port(socket)
        await server.start()
        ready.set()
        await server.wait_for_termination()

    asyncio.run(main())


def _load(socket: str, kind: str, concurrency: int, calls: int,
          token: str | None) -> dict[str, Any]:
    """`calls` unary calls from `concurrency` tasks on one channel; latency per call."""
    import grpc

    from bridge._proto.spiffe import workload_pb2
    from bridge._proto.spiffebridge.v1 import credentials_pb2 as pb
    from bridge._proto.spiffebridge.v1 import credentials_pb2_grpc as pb_grpc

    async def main() -> dict[str, Any]:
        async with grpc.aio.insecure_channel(socket) as channel:
            if kind == "spire":
                call: Any = channel.unary_unary(
                    "/SpiffeWorkloadAPI/FetchJWTSVID",
                    request_serializer=workload_pb2.JWTSVIDRequest.SerializeToString,
                    response_deserializer=workload_pb2.JWTSVIDResponse.FromString)
                request: Any = workload_pb2.JWTSVIDRequest(audience=[SPIRE_AUDIENCE])
                metadata: Any = (("workload.spiffe.io", "true"),)

                def check(r: Any) -> int:
                    return len(r.svids[0].svid)
            else:
                call = pb_grpc.CredentialServiceStub(channel).GetCredential
                request = pb.GetCredentialRequest(target=TARGET)
                metadata = (("authorization", f"Bearer {token}"),) if token else None

                def check(r: Any) -> int:
                    return len(r.credential.aws.access_key_id)
            assert check(await call(request, metadata=metadata))  # connect, warm
            latencies: list[float] = []
            per_task = max(1, calls // concurrency)

            async def worker() -> None:
                for _ in range(per_task):
                    t0 = time.perf_counter()
                    response = await call(request, metadata=metadata)
                    latencies.append(time.perf_counter() - t0)
                    assert check(response)
            start = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(concurrency)))
            elapsed = time.perf_counter() - start
        return {"rps": len(latencies) / elapsed, "latencies": latencies}

    return asyncio.run(main())


def _response_body() -> bytes:
    from bridge._proto.spiffebridge.v1 import credentials_pb2 as pb
    from bridge.app.daemon import served_target
    from bridge.clouds.aws import AwsHopConfig
    from bridge.config import TargetConfig
    from bridge.serving.grpc.convert import credential_message

    now = time.time()
    target = TargetConfig(name=TARGET, audience="sts.amazonaws.com", hops=(AwsHopConfig(
        role_arn="arn:aws:iam::111122223333:role/bench", region="us-east-1"),))
    return pb.GetCredentialResponse(credential=credential_message(  # validity: monotonic
        served_target(target), _credential_status(now), time.monotonic())).SerializeToString()


def _start(target: Callable[..., None], *args: Any) -> multiprocessing.process.BaseProcess:
    ctx = multiprocessing.get_context("spawn")
    ready = ctx.Event()
    process = ctx.Process(target=target, args=(*args, ready), daemon=True)
    process.start()
    deadline = time.monotonic() + 30
    while not ready.wait(0.1):
        if not process.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"{target.__name__} did not start")
    return process


def _start_spire(workdir: Path) -> tuple[Any, str]:
    """(the SPIRE deployment, "") or (None, why it is skipped): the integration tests'
    harness, server and agent only, with one entry for this uid."""
    from tests.support.spire import TRUST_DOMAIN, SpireDeployment, find_spire, tool_dir

    spiffe_id = f"spiffe://{TRUST_DOMAIN}/bench"

    binaries = find_spire()
    if binaries is None:
        return None, (f"SPIRE binaries not found in {tool_dir()} or on PATH (build them "
                      "with tests/tools/install-spire.sh)")
    spire = SpireDeployment(binaries, workdir / "spire")
    try:
        spire.start_server_and_agent()
        spire.create_entry(spiffe_id)
        spire.wait_for_identity(spiffe_id)
    except Exception as exc:  # reported as a skipped row, with the reason
        spire.stop()
        return None, f"SPIRE did not start: {str(exc)[:300]}"
    return spire, ""


def run(calls: int, rounds: int, spire: bool = True) -> dict[str, Any]:
    from bridge.devstack import JwtAuthority

    authority = JwtAuthority("example.org")
    bundle = json.dumps(authority.spiffe_bundle()).encode()
    token = authority.mint("spiffe://example.org/bench", ["spiffe-bridge"], 3600)
    workdir = Path(tempfile.mkdtemp(prefix="sbg-", dir="/tmp"))
    sockets = {name: f"unix://{workdir}/{name}.sock" for name in SERVERS[:4]}
    body = _response_body()
    processes: dict[str, Any] = {
        "bridge": _start(_serve_bridge, sockets["bridge"], False, bundle),
        "guarded": _start(_serve_bridge, sockets["guarded"], True, bundle),
        "min-bytes": _start(_serve_minimal_bytes, sockets["min-bytes"], body),
        "min-servicer": _start(_serve_minimal_servicer, sockets["min-servicer"], body),
    }
    pids = {name: p.pid for name, p in processes.items()}
    agent, skipped = _start_spire(workdir) if spire else (None, "disabled (--no-spire)")
    servers = [s for s in SERVERS if s != "spire-agent" or agent is not None]
    if agent is not None:
        sockets["spire-agent"] = agent.agent_socket_uri
        pids["spire-agent"] = agent.agent.pid
    results: dict[str, Any] = {"message_bytes": len(body), "calls": calls, "rounds": rounds,
                               "servers": servers, "spire_skipped": skipped, "rows": []}
    pool = multiprocessing.get_context("spawn").Pool(1)
    try:
        for concurrency in CONCURRENCY:
            rps: dict[str, list[float]] = {k: [] for k in servers}
            p50: dict[str, list[float]] = {k: [] for k in servers}
            latencies: dict[str, list[float]] = {k: [] for k in servers}
            cpu: dict[str, list[float]] = {k: [] for k in servers}
            for i in range(rounds):
                order = servers if i % 2 == 0 else list(reversed(servers))
                for name in order:
                    before = cpu_seconds(pids[name])
                    got = pool.apply(_load, (sockets[name],
                                             "spire" if name == "spire-agent" else "bridge",
                                             concurrency, calls,
                                             token if name == "guarded" else None))
                    cpu[name].append((cpu_seconds(pids[name]) - before) / len(got["latencies"]))
                    rps[name].append(got["rps"])
                    p50[name].append(percentile(got["latencies"], 0.50))
                    latencies[name].extend(got["latencies"])
            row: dict[str, Any] = {"concurrency": concurrency}
            for name in servers:
                row[name] = {"rps": statistics.median(rps[name]),
                             "p50_ms": percentile(latencies[name], 0.50) * 1000,
                             "p99_ms": percentile(latencies[name], 0.99) * 1000,
                             "cpu_us": statistics.median(cpu[name]) * 1e6,
                             "rps_rounds": rps[name]}
            # Ratios: the median over rounds of the ratio within a round (the two ran
            # back to back), steadier on a shared machine than a ratio of medians.
            def per_round(num: list[float], den: list[float]) -> float:
                return statistics.median(a / b for a, b in zip(num, den, strict=True))
            row["ratio_bytes"] = per_round(rps["bridge"], rps["min-bytes"])
            row["ratio_servicer"] = per_round(rps["bridge"], rps["min-servicer"])
            row["ratio_guarded"] = per_round(rps["guarded"], rps["min-bytes"])
            row["cpu_ratio_servicer"] = per_round(cpu["bridge"], cpu["min-servicer"])
            if agent is not None:
                row["p50_vs_agent"] = per_round(p50["bridge"], p50["spire-agent"])
            results["rows"].append(row)
    finally:
        pool.terminate()
        for process in processes.values():
            process.terminate()
        if agent is not None:
            agent.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    return results


def profile_bridge(out: Path, calls: int = 20000, concurrency: int = 8) -> float:
    """py-spy (GIL samples) of the bridge's server process under `concurrency` clients;
    collapsed stacks to `out`. Returns the rps of that load."""
    import signal
    import subprocess

    from bridge.devstack import JwtAuthority
    from tests.bench._common import py_spy

    exe = py_spy()
    if exe is None:
        raise RuntimeError("py-spy is not installed (pip install py-spy)")
    bundle = json.dumps(JwtAuthority("example.org").spiffe_bundle()).encode()
    workdir = Path(tempfile.mkdtemp(prefix="sbgp-", dir="/tmp"))
    socket = f"unix://{workdir}/bridge.sock"
    server = _start(_serve_bridge, socket, False, bundle)
    pool = multiprocessing.get_context("spawn").Pool(1)
    try:
        pool.apply(_load, (socket, "bridge", concurrency, 500, None))
        spy = subprocess.Popen([exe, "record", "--pid", str(server.pid), "--rate", "500",
                                "--gil", "--nonblocking", "--format", "raw", "-o", str(out)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1.0)
        rps = float(pool.apply(_load, (socket, "bridge", concurrency, calls, None))["rps"])
        spy.send_signal(signal.SIGINT)
        spy.wait(30)
    finally:
        pool.terminate()
        server.terminate()
        shutil.rmtree(workdir, ignore_errors=True)
    return rps


def table(results: dict[str, Any]) -> str:
    servers = results["servers"]
    lines = [f"GetCredential over a unix socket ({results['message_bytes']}-byte response, "
             f"{results['calls']} calls x {results['rounds']} interleaved rounds; rps = median "
             "of rounds, p50/p99 over all calls, cpu = server CPU us per call)",
             f"{'clients':>7}  {'server':<13}{'rps':>7} {'p50 ms':>8} {'p99 ms':>8} "
             f"{'cpu us':>7}"]
    for r in results["rows"]:
        for name in servers:
            s = r[name]
            lines.append(f"{r['concurrency']:>7}  {name:<13}{s['rps']:>7.0f} {s['p50_ms']:>8.2f} "
                         f"{s['p99_ms']:>8.2f} {s['cpu_us']:>7.0f}")
        extra = (f"; bridge p50 / agent p50 {r['p50_vs_agent']:.2f}"
                 if "p50_vs_agent" in r else "")
        lines.append(f"{'':>9}bridge/min-bytes {r['ratio_bytes']:.2f}, bridge/min-servicer "
                     f"{r['ratio_servicer']:.2f}, guarded/min-bytes {r['ratio_guarded']:.2f}"
                     f"{extra}")
    if results["spire_skipped"]:
        lines.append(f"spire-agent row skipped: {results['spire_skipped']}")
    lines.append("targets: bridge rps >= 0.95 x minimal, guarded >= 0.90 x; bridge p50 <= SPIRE "
                 "agent p50")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-spire", action="store_true", help="skip the SPIRE agent row")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--profile", type=Path,
                        help="only profile the bridge's server (py-spy) into this file")
    args = parser.parse_args(argv)
    if args.profile:
        print(f"profiled {profile_bridge(args.profile):.0f} rps at 8 clients into "
              f"{args.profile}")
        return 0
    results = run(args.calls, args.rounds, spire=not args.no_spire)
    results.update(python=sys.version.split()[0], cores=os.cpu_count())
    report(results, table(results), args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
