"""Read path: the AWS container credentials endpoint vs a minimal http.server.

Each server runs in its own process; one load process drives them with 1, 8 and 64
concurrent clients (threads, one keep-alive `http.client` connection each, connected
and warmed before the clock starts), a bounded number of requests per round, rounds
interleaved (the order reversed every other round) so drift hits all alike; ratios are
the median over rounds of the ratio within each round. Server CPU time per request is
read from /proc as well: on a shared machine it is the steadier figure.

- bridge: `ContainerServer` over a store holding one AWS credential, with the token
  check, Host check, store read and metrics it does in the daemon.
- minimal: `ThreadingHTTPServer`, HTTP/1.1 keep-alive, TCP_NODELAY, the same listen
  backlog, one GET handler returning a constant JSON body of exactly the bridge's size
  through the usual `send_response`/`send_header`/`end_headers`/`wfile.write`.
- minimal-1w: the same, but headers and body leave in one write, as the bridge's do
  (the stricter floor: the idiomatic handler pays a second send per reply).

    python -m tests.bench.bench_metadata [--requests 4000] [--rounds 3] [--json FILE]
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import os
import statistics
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from tests.bench._common import report

CONCURRENCY = (1, 8, 64)
TARGET = "bench"
PATH = f"/v1/credentials/{TARGET}"
SERVERS = ("bridge", "minimal", "minimal-1w")


def _serve_bridge(token_file: str, ready: Any, port: Any) -> None:
    from prometheus_client import CollectorRegistry

    from bridge.clouds.aws import AwsCredentials, AwsHopConfig
    from bridge.clouds.aws.container import ContainerConfig, ContainerServer
    from bridge.config import TargetConfig
    from bridge.metrics import Metrics
    from bridge.model import Credential
    from bridge.store import CredentialStore

    now = time.time()
    store = CredentialStore([TARGET])
    aws = AwsCredentials(access_key_id="ASIA" + "B" * 16, secret_access_key="s" * 40,
                         session_token="t" * 700, expires_at=now + 3600)
    store.succeeded(TARGET, Credential(target=TARGET, issued_at=now, expires_at=now + 3600,
                                       svid_expires_at=now + 300, material=aws,
                                       deadline=time.monotonic() + 3600,
                                       received=time.monotonic()), now)
    target = TargetConfig(name=TARGET, audience="sts.amazonaws.com", serve=("container",),
                          hops=(AwsHopConfig(role_arn="arn:aws:iam::111122223333:role/bench",
                                             region="us-east-1"),))
    server = ContainerServer(ContainerConfig("127.0.0.1:0", Path(token_file)), [target],
                             store=store, now=time.monotonic, metrics=Metrics(CollectorRegistry()))
    server.start()
    port.value = server.port
    ready.set()
    while True:
        time.sleep(3600)


def _serve_minimal(body: bytes, one_write: bool, ready: Any, port: Any) -> None:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True

        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            if one_write:
                self._headers_buffer.append(b"\r\n" + body)  # type: ignore[attr-defined]
                self.flush_headers()
            else:
                self.end_headers()
                self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            return

    class Server(ThreadingHTTPServer):
        daemon_threads = True
        request_queue_size = 128

    server = Server(("127.0.0.1", 0), Handler)
    port.value = server.server_address[1]
    ready.set()
    server.serve_forever()


def _load(port: int, headers: dict[str, str], concurrency: int,
          requests: int) -> dict[str, Any]:
    """`requests` GETs from `concurrency` keep-alive clients; throughput and latencies."""
    per_client = max(1, requests // concurrency)
    connections = [http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                   for _ in range(concurrency)]
    sizes = set()
    for conn in connections:  # connect and warm outside the clock
        conn.request("GET", PATH, headers=headers)
        response = conn.getresponse()
        sizes.add(len(response.read()))
        assert response.status == 200, response.status
    latencies: list[list[float]] = [[] for _ in range(concurrency)]
    start = threading.Barrier(concurrency + 1)

    def client(i: int) -> None:
        conn, mine = connections[i], latencies[i]
        start.wait()
        for _ in range(per_client):
            t0 = time.perf_counter()
            conn.request("GET", PATH, headers=headers)
            response = conn.getresponse()
            response.read()
            mine.append(time.perf_counter() - t0)
            if response.status != 200:
                raise RuntimeError(f"status {response.status}")

    threads = [threading.Thread(target=client, args=(i,)) for i in range(concurrency)]
    for t in threads:
        t.start()
    start.wait()
    began = time.perf_counter()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - began
    for conn in connections:
        conn.close()
    flat = sorted(x for per in latencies for x in per)
    return {"rps": len(flat) / elapsed, "latencies": flat, "body_bytes": sorted(sizes)}


def _bridge_body() -> bytes:
    from bridge.clouds.aws import AwsCredentials
    from bridge.clouds.aws.container import _render
    from bridge.model import Credential

    now = time.time()
    aws = AwsCredentials(access_key_id="ASIA" + "B" * 16, secret_access_key="s" * 40,
                         session_token="t" * 700, expires_at=now + 3600)
    credential = Credential(target=TARGET, issued_at=now, expires_at=now + 3600,
                            svid_expires_at=now + 300, material=aws,
                            deadline=time.monotonic() + 3600, received=time.monotonic())
    return _render(credential, "arn:aws:iam::111122223333:role/bench")


def _start(target: Any, *args: Any) -> tuple[multiprocessing.process.BaseProcess, int]:
    ctx = multiprocessing.get_context("spawn")
    ready, port = ctx.Event(), ctx.Value("i", 0)
    process = ctx.Process(target=target, args=(*args, ready, port), daemon=True)
    process.start()
    if not ready.wait(30):
        raise RuntimeError(f"{target.__name__} did not start")
    return process, int(port.value)


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux /proc), robust to a busy machine."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _percentile(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, int(len(values) * q))] * 1000


def run(requests: int, rounds: int) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="sb-bench-", dir="/dev/shm"))
    token_file = workdir / "container.token"
    body = _bridge_body()
    constant = json.dumps({"x": "c" * (len(body) - len('{"x": ""}'))}).encode()
    assert len(constant) == len(body)
    started = {"bridge": _start(_serve_bridge, str(token_file)),
               "minimal": _start(_serve_minimal, constant, False),
               "minimal-1w": _start(_serve_minimal, constant, True)}
    headers = {"Accept": "application/json", "Authorization": token_file.read_text()}
    results: dict[str, Any] = {"body_bytes": len(body), "requests": requests,
                               "rounds": rounds, "rows": []}
    pool = multiprocessing.get_context("spawn").Pool(1)
    try:
        for concurrency in CONCURRENCY:
            rps: dict[str, list[float]] = {k: [] for k in SERVERS}
            latencies: dict[str, list[float]] = {k: [] for k in SERVERS}
            cpu: dict[str, list[float]] = {k: [] for k in SERVERS}
            for i in range(rounds):
                order = SERVERS if i % 2 == 0 else tuple(reversed(SERVERS))
                for name in order:
                    process, port = started[name]
                    assert process.pid is not None
                    before = _cpu_seconds(process.pid)
                    got = pool.apply(_load, (port, headers, concurrency, requests))
                    cpu[name].append((_cpu_seconds(process.pid) - before) / requests)
                    assert got["body_bytes"] == [len(body)], got["body_bytes"]
                    rps[name].append(got["rps"])
                    latencies[name].extend(got["latencies"])
            row: dict[str, Any] = {"concurrency": concurrency}
            for name in SERVERS:
                lat = sorted(latencies[name])
                row[name] = {"rps": statistics.median(rps[name]),
                             "p50_ms": _percentile(lat, 0.50), "p99_ms": _percentile(lat, 0.99),
                             "cpu_us": statistics.median(cpu[name]) * 1e6}
            # The median over rounds of the ratio within a round (the servers ran back to
            # back): steadier on a shared machine than a ratio of the medians.
            row["ratio"] = statistics.median(
                b / m for b, m in zip(rps["bridge"], rps["minimal"], strict=True))
            row["ratio_1w"] = statistics.median(
                b / m for b, m in zip(rps["bridge"], rps["minimal-1w"], strict=True))
            results["rows"].append(row)
    finally:
        pool.terminate()
        for process, _ in started.values():
            process.terminate()
        for p in workdir.iterdir():
            p.unlink()
        workdir.rmdir()
    return results


def profile_bridge(out: Path, requests: int = 20000, concurrency: int = 8) -> float:
    """py-spy (GIL samples) of the bridge's container endpoint under `concurrency` clients;
    collapsed stacks to `out`. Returns the rps of that load."""
    import signal
    import subprocess

    from tests.bench._common import py_spy

    exe = py_spy()
    if exe is None:
        raise RuntimeError("py-spy is not installed (pip install py-spy)")
    workdir = Path(tempfile.mkdtemp(prefix="sb-bench-", dir="/dev/shm"))
    token_file = workdir / "container.token"
    process, port = _start(_serve_bridge, str(token_file))
    headers = {"Accept": "application/json", "Authorization": token_file.read_text()}
    pool = multiprocessing.get_context("spawn").Pool(1)
    try:
        pool.apply(_load, (port, headers, concurrency, 500))
        spy = subprocess.Popen([exe, "record", "--pid", str(process.pid), "--rate", "500",
                                "--gil", "--nonblocking", "--format", "raw", "-o", str(out)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1.0)
        rps = float(pool.apply(_load, (port, headers, concurrency, requests))["rps"])
        spy.send_signal(signal.SIGINT)
        spy.wait(30)
    finally:
        pool.terminate()
        process.terminate()
        for f in workdir.iterdir():
            f.unlink()
        workdir.rmdir()
    return rps


def table(results: dict[str, Any]) -> str:
    lines = [f"GET {PATH} on loopback, keep-alive HTTP/1.1 ({results['body_bytes']}-byte "
             f"body, {results['requests']} requests x {results['rounds']} interleaved rounds; "
             "rps = median of rounds, p50/p99 over all requests)",
             f"{'clients':>7} {'bridge rps':>11} {'minimal':>8} {'min-1w':>8} "
             f"{'ratio':>6} {'ratio-1w':>8}  {'p50 ms b/m/1w':>18}  {'p99 ms b/m/1w':>18}  "
             f"{'cpu us b/m/1w':>14}"]
    for r in results["rows"]:
        b, m, w = r["bridge"], r["minimal"], r["minimal-1w"]
        lines.append(
            f"{r['concurrency']:>7} {b['rps']:>11.0f} {m['rps']:>8.0f} {w['rps']:>8.0f} "
            f"{r['ratio']:>6.2f} {r['ratio_1w']:>8.2f}  "
            f"{b['p50_ms']:>5.2f}/{m['p50_ms']:.2f}/{w['p50_ms']:<5.2f}  "
            f"{b['p99_ms']:>5.2f}/{m['p99_ms']:.2f}/{w['p99_ms']:<5.2f}  "
            f"{b['cpu_us']:>4.0f}/{m['cpu_us']:.0f}/{w['cpu_us']:<4.0f}")
    lines.append("target: ratio >= 0.90. cpu = server CPU microseconds per request (median "
                 "of rounds; steadier than rps when other work shares the cores)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--requests", type=int, default=4000,
                        help="requests per round and server (split across clients)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--profile", type=Path,
                        help="only profile the bridge's endpoint (py-spy) into this file")
    args = parser.parse_args(argv)
    if args.profile:
        print(f"profiled {profile_bridge(args.profile):.0f} rps at 8 clients into "
              f"{args.profile}")
        return 0
    results = run(args.requests, args.rounds)
    results.update(python=sys.version.split()[0], cores=os.cpu_count())
    report(results, table(results), args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
