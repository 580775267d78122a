"""The cost of one `/metrics` scrape at fleet scale (issue 19, item 8).

The bridge's own `Metrics` with N targets set up as a running daemon has them (every
per-target series set, refresh counters and stage histograms fed), rendered with
`Metrics.render()`, side by side in one run with the baseline: the same series as plain
prometheus-client `Gauge`/`Counter`/`Histogram` families on one registry, per-target
stage histograms and `_created` series included (what the bridge exported before),
rendered with `generate_latest`. Figures: median and p99 render time, page size raw and
gzipped. Targets: < 50 ms and < 300 KB (gzip, as Prometheus asks for it) at 1,000.

    python -m tests.bench.bench_scrape [--targets 1000] [--rounds 30] [--json FILE]
"""

from __future__ import annotations

import argparse
import gzip
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from bridge.metrics import Metrics
from bridge.model import State
from tests.bench._common import median, report

STAGES = ("svid", "exchange", "total")
TIME_TARGET_MS = 50.0
SIZE_TARGET_KB = 300.0


def _bridge(n: int) -> Metrics:
    metrics = Metrics(CollectorRegistry())
    now = time.time()
    for i in range(n):
        name = f"target-{i:04d}"
        metrics.init_target(name)
        metrics.refresh_total.labels(name, "success").inc(12)
        metrics.refresh_failures.labels(name, "aws_web_identity", "throttled").inc(1)
        metrics.expiry.labels(name).set(now + 3600)
        metrics.last_success.labels(name).set(now)
        metrics.svid_expiry.labels(name).set(now + 300)
        metrics.set_state(name, State.FRESH)
        for stage in STAGES:
            metrics.refresh_duration.labels(stage).observe(0.05)
    return metrics


def _baseline(n: int) -> CollectorRegistry:
    """The pre-change shape: prometheus-client families, target on every series."""
    r = CollectorRegistry()
    total = Counter("spiffe_bridge_refresh_total", "x", ["target", "result"], registry=r)
    failures = Counter("spiffe_bridge_refresh_failures_total", "x",
                       ["target", "stage", "reason"], registry=r)
    duration = Histogram("spiffe_bridge_refresh_duration_seconds", "x", ["target", "stage"],
                         buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                                  10.0, 30.0, 60.0), registry=r)
    gauges = [Gauge(f"spiffe_bridge_{g}", "x", ["target"], registry=r) for g in (
        "credential_expiry_timestamp_seconds", "credential_last_success_timestamp_seconds",
        "svid_expiry_timestamp_seconds", "permanent_failure", "outputs_behind")]
    state = Gauge("spiffe_bridge_credential_state", "x", ["target", "state"], registry=r)
    now = time.time()
    for i in range(n):
        name = f"target-{i:04d}"
        total.labels(name, "success").inc(12)
        total.labels(name, "failure")
        failures.labels(name, "aws_web_identity", "throttled").inc()
        for stage in STAGES:
            duration.labels(name, stage).observe(0.05)
        for g in gauges:
            g.labels(name).set(now)
        for s in State:
            state.labels(name, s.value).set(1 if s is State.FRESH else 0)
    return r


def _time(render: Any, rounds: int) -> tuple[list[float], bytes]:
    page = render()
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        page = render()
        times.append((time.perf_counter() - started) * 1000)
    return times, page


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--targets", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    bridge, base = _bridge(args.targets), _baseline(args.targets)
    rows = {}
    for name, render in (("bridge", bridge.render),
                         ("prometheus-client", lambda: generate_latest(base))):
        times, page = _time(render, args.rounds)
        ordered = sorted(times)
        rows[name] = {"median_ms": median(times),
                      "p99_ms": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))],
                      "raw_kb": len(page) / 1024,
                      "gzip_kb": len(gzip.compress(page, compresslevel=1)) / 1024}
    b, p = rows["bridge"], rows["prometheus-client"]
    results = {"targets": args.targets, "rounds": args.rounds, **rows,
               "ratio_median": b["median_ms"] / p["median_ms"],
               "met_time": b["median_ms"] < TIME_TARGET_MS,
               "met_size": b["gzip_kb"] < SIZE_TARGET_KB}
    lines = [f"/metrics at {args.targets} targets, {args.rounds} renders each (one run):",
             f"{'':20} {'median':>10} {'p99':>10} {'raw':>10} {'gzip':>10}"]
    for name, r in rows.items():
        lines.append(f"{name:20} {r['median_ms']:>8.1f}ms {r['p99_ms']:>8.1f}ms "
                     f"{r['raw_kb']:>8.0f}KB {r['gzip_kb']:>8.0f}KB")
    lines.append(f"bridge / prometheus-client render time: {results['ratio_median']:.3f}; "
                 f"targets < {TIME_TARGET_MS:.0f} ms: {'met' if results['met_time'] else 'NO'},"
                 f" < {SIZE_TARGET_KB:.0f} KB gzip: {'met' if results['met_size'] else 'NO'}")
    report(results, "\n".join(lines), args.json)


if __name__ == "__main__":
    main()
