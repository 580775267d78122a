"""Fleet simulation: 10,000 bridges x 20 targets through five scenarios, today's
behaviour beside the fleet work (spread, budgets), on the model in `fleet_model`.

Scenarios (t = 0 is a fleet in steady state, its nodes booted over half an hour, 2 h
before):
- steady: 6 h of nothing happening;
- rolling: every node's bridge restarts (warm: credentials recovered from tmpfs) within
  10 min;
- outage: us-east-1 STS answers 503 for 30 min (1,800-3,600 s), then recovers;
- rotation: for 5 min (1,800-2,100 s) every token service rejects the new JWT key
  (its JWKS cache has not fetched it yet): InvalidIdentityToken / invalid_grant;
- cold: the whole fleet starts at once with nothing.

Per scenario and behaviour it prints calls/s per quota scope over 1 s buckets (peak,
mean, p99, peak / mean, and beside it the peak / mean that independent random calls at
that mean give, `random`: the floor for nodes that do not coordinate; also peak / mean
over 60 s buckets), seconds over quota,
throttled calls, lapses (a credential expired without a replacement) and time to
recovery (10 s resolution), writes tests/bench/results/fleet-<scenario>.png (calls/s
against the quota line; a sample's are fleet-<scenario>-sample<nodes>.png) and, with
--json, every figure.

    python -m tests.bench.bench_fleet [--nodes 10000] [--jobs 2] [--json FILE]

`--nodes` below 10,000 samples the fleet: each bridge keeps its share of the whole
fleet's quota, and the cloud enforces each quota per window of 10,000 / nodes seconds
(the sample's count in such a window is distributed as the whole fleet's in a second):
every "per second" figure of a sample is per such window.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.bench import fleet_model
from tests.bench.fleet_model import MIX, Faults, Fleet, quota_of

RESULTS = Path(__file__).resolve().parent / "results"
FLEET = 10_000
WARMUP = 7200.0  # long enough for a phase-locked fleet to settle on its phases


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    duration: float
    event_end: float | None  # recovery is counted from here
    faults: Callable[[], Faults]
    setup: Callable[[Fleet, int], None]


def _steady_boot(fleet: Fleet, nodes: int) -> None:
    rng = random.Random(5)
    fleet.now = -WARMUP
    for n in range(nodes):
        fleet.start_node(n, -WARMUP + rng.random() * 1800.0)


def _rolling(fleet: Fleet, nodes: int) -> None:
    _steady_boot(fleet, nodes)
    for n in range(nodes):
        when = 600.0 * n / nodes
        fleet.at(when, fleet_model._CALL, lambda n=n, when=when: fleet.start_node(
            n, when, warm=True))


def _cold(fleet: Fleet, nodes: int) -> None:
    fleet.now = 0.0
    for n in range(nodes):
        fleet.start_node(n, 0.0)


def _outage() -> Faults:
    return Faults(down=lambda t, s: 1800.0 <= t < 3600.0 and s.endswith(" us-east-1"))


def _rotation() -> Faults:
    return Faults(invalid=lambda t, s: 1800.0 <= t < 2100.0 and not s.startswith("gcp_iam"))


SCENARIOS = (
    Scenario("steady", "steady state, 6 h", 6 * 3600.0, None, Faults, _steady_boot),
    Scenario("rolling", "rolling restart of every node in 10 min", 2 * 3600.0, 600.0,
             Faults, _rolling),
    Scenario("outage", "30 min us-east-1 STS outage (1800-3600 s)", 3 * 3600.0, 3600.0,
             _outage, _steady_boot),
    Scenario("rotation", "JWT key unknown to the token services for 5 min (1800-2100 s)",
             2 * 3600.0, 2100.0, _rotation, _steady_boot),
    Scenario("cold", "fleet-wide cold start", 1.5 * 3600.0, 0.0, Faults, _cold),
)


BEHAVIOURS = ("today", "spread", "locked")
LABELS = {"today": "today", "spread": "fleet work", "locked": "+ node_index"}


def simulate(job: tuple[str, str, int]) -> dict[str, Any]:
    """One scenario with one behaviour; returns its figures and plot series."""
    name, behaviour, nodes = job
    work = behaviour != "today"
    scenario = next(s for s in SCENARIOS if s.name == name)
    scale = nodes / FLEET
    started = time.process_time()
    fleet = Fleet(nodes, fleet_work=work, start=0.0, end=scenario.duration,
                  faults=scenario.faults(), fleet_size=FLEET, cloud_scale=scale,
                  numbered=behaviour == "locked")
    scenario.setup(fleet, nodes)
    total = nodes * len(MIX)
    per_kind = {k.name: nodes * sum(1 for m in MIX if m is k) for k in MIX}
    missing: list[tuple[float, int]] = []
    missing_by_kind: dict[str, list[tuple[float, int]]] = {k: [] for k in per_kind}

    def tick(t: float) -> None:
        if t < 0:
            return
        missing.append((t, total - fleet.holding))
        for k, n in per_kind.items():
            missing_by_kind[k].append((t, n - fleet.holding_by_kind[k]))

    fleet.run(scenario.duration, on_tick=tick)
    scopes: dict[str, Any] = {}
    for scope, seconds in sorted(fleet.stats.calls.items()):
        quota = quota_of(scope)
        w = fleet.window  # 1 for the whole fleet; a sample's windows stand for seconds
        buckets = [sum(seconds[i:i + w]) for i in range(0, len(seconds) - w + 1, w)]
        per_s = [float(b) for b in buckets]
        mean = sum(per_s) / len(per_s)
        minute = [sum(per_s[i:i + 60]) / 60 for i in range(0, len(per_s) - 59, 60)]
        over = [b > quota + 1e-9 for b in buckets]
        scopes[scope] = {
            "quota": quota_of(scope), "peak": max(per_s), "mean": mean,
            "p99": sorted(per_s)[int(0.99 * (len(per_s) - 1))],
            "peak_over_mean": max(per_s) / mean if mean else math.nan,
            "peak_over_mean_60s": max(minute) / mean if mean and minute else math.nan,
            "poisson_floor": _poisson_floor(sum(buckets) / len(buckets), len(buckets)),
            "seconds_over_quota": sum(over), "longest_over_quota_s": _longest(over),
            "throttled": round(fleet.stats.throttled.get(scope, 0) / scale),
            "window_s": w,
            "series": per_s if scope in _plotted(fleet.stats.calls) else None,
        }
    recovery = _recovery(missing, scenario.event_end)
    by_kind = {k: _recovery(m, scenario.event_end) for k, m in missing_by_kind.items()}
    headroom = sorted(fleet.stats.headroom)
    return {"scenario": name, "behaviour": behaviour, "fleet_work": work, "nodes": nodes,
            "scopes": scopes,
            "lapses": round(fleet.stats.lapses / scale), "recovery_s": recovery,
            "recovery_by_kind_s": by_kind,
            "never_recovered": recovery is None and scenario.event_end is not None,
            "missing_at_end": missing[-1][1] if missing else 0,
            "headroom_p1_s": headroom[len(headroom) // 100] if headroom else None,
            "cpu_s": time.process_time() - started}


def _recovery(missing: list[tuple[float, int]], event_end: float | None) -> float | None:
    """Seconds from `event_end` to the first tick with nothing missing (None: never, or
    no event)."""
    if event_end is None:
        return None
    back = next((t for t, m in missing if t >= event_end and m == 0), None)
    return None if back is None else back - event_end


def _poisson_floor(mean: float, buckets: int) -> float:
    """Peak / mean that independent random calls at this mean give over this many 1 s
    buckets (the Poisson quantile at 1 - 1/buckets): what no spread can beat without
    the nodes coordinating."""
    if mean <= 0:
        return math.nan
    target = 1.0 - 1.0 / buckets
    k, term = 0, math.exp(-mean)
    total = term
    while total < target and k < 100 * mean + 100:
        k += 1
        term *= mean / k
        total += term
    return k / mean


def _plotted(calls: dict[str, list[int]]) -> set[str]:
    """The busiest AWS scope of us-east-1 and GCP STS: the ones drawn."""
    aws = [s for s in calls if s.startswith("aws_sts") and s.endswith("us-east-1")]
    busiest = max(aws, key=lambda s: sum(calls[s])) if aws else None
    return {s for s in (busiest, f"gcp_sts {fleet_model.GCP_PROJECT}") if s}


def _longest(flags: list[bool]) -> int:
    best = run = 0
    for f in flags:
        run = run + 1 if f else 0
        best = max(best, run)
    return best


COLOURS = {"today": "tab:red", "spread": "tab:blue", "locked": "tab:green"}


def plot(scenario: Scenario, results: list[dict[str, Any]], out: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plotted = sorted({s for r in results for s, v in r["scopes"].items()
                      if v["series"] is not None})
    fig, axes = plt.subplots(len(plotted), 1, figsize=(11, 3.2 * len(plotted)), squeeze=False)
    for ax, scope in zip(axes[:, 0], plotted, strict=True):
        for result in results:
            b = result["behaviour"]
            series = result["scopes"].get(scope, {}).get("series") or []
            ax.plot(range(len(series)), series, lw=0.5, color=COLOURS[b], label=LABELS[b],
                    alpha=0.8)
        ax.axhline(quota_of(scope), color="black", ls="--", lw=1, label="quota")
        ax.set_title(f"{scenario.title}: {scope}", fontsize=9)
        ax.set_ylabel("calls/s (1 s buckets)")
        ax.set_yscale("symlog", linthresh=10)
        ax.legend(fontsize=7, loc="upper right")
    axes[-1, 0].set_xlabel("seconds")
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)


def _family(scope: str) -> str:
    service = scope.split(" ", maxsplit=1)[0]
    return f"{service} {scope.rsplit(' ', maxsplit=1)[-1]}" if service == "aws_sts" else service


def table(results: list[dict[str, Any]]) -> str:
    """Per scenario and behaviour, the worst scope of each family (AWS per region, GCP)."""
    lines = [f"{'scenario':9} {'behaviour':12} {'scope (worst of family)':36} {'peak/s':>8} "
             f"{'mean/s':>8} {'p99/s':>8} {'pk/mean':>7} {'random':>6} {'60s':>5} "
             f"{'>quota s':>8} "
             f"{'throttled':>9} {'lapses':>7} {'recovery':>9}"]
    for r in results:
        families: dict[str, tuple[str, dict[str, Any]]] = {}
        for scope, v in r["scopes"].items():
            f = _family(scope)
            if f not in families or v["peak"] > families[f][1]["peak"]:
                families[f] = (scope, v)
        recovery = ("never" if r["never_recovered"] else "-" if r["recovery_s"] is None
                    else f"{r['recovery_s']:.0f} s")
        for i, (scope, v) in enumerate(sorted(families.values())):
            lines.append(
                f"{r['scenario'] if i == 0 else '':9} "
                f"{LABELS[r['behaviour']] if i == 0 else '':12} "
                f"{scope:36} {v['peak']:8.1f} {v['mean']:8.1f} {v['p99']:8.1f} "
                f"{v['peak_over_mean']:7.2f} {v['poisson_floor']:6.2f} "
                f"{v['peak_over_mean_60s']:5.2f} "
                f"{v['seconds_over_quota']:8d} {v['throttled']:9d} "
                f"{r['lapses'] if i == 0 else '':>7} {recovery if i == 0 else '':>9}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=FLEET)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--scenarios", default=",".join(s.name for s in SCENARIOS))
    parser.add_argument("--behaviours", default=",".join(BEHAVIOURS),
                        help="today (main before the fleet work), spread (the fleet work), "
                        "locked (the fleet work with refresh.node_index on every node)")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--no-plots", action="store_true")
    args = parser.parse_args(argv)
    names = args.scenarios.split(",")
    behaviours = [b for b in args.behaviours.split(",") if b in BEHAVIOURS]
    jobs = [(n, b, args.nodes) for n in names for b in behaviours]
    started = time.monotonic()
    with multiprocessing.get_context("fork").Pool(args.jobs) as pool:
        results = pool.map(simulate, jobs, chunksize=1)
    wall = time.monotonic() - started
    sample = "" if args.nodes == FLEET else (
        f" (a {args.nodes / FLEET:.0%} sample: each 'second' is a window of "
        f"{round(FLEET / args.nodes)} s, in which the cloud enforces a second's quota; "
        f"counts of calls and lapses are scaled to the whole fleet)")
    print(f"fleet simulation: {args.nodes} nodes x {len(MIX)} targets{sample}; "
          f"{wall:.0f} s wall, {sum(r['cpu_s'] for r in results):.0f} s CPU")
    print(table(results))
    for r in results:
        if r["recovery_s"] is not None or r["never_recovered"]:
            kinds = ", ".join(f"{k} {'never' if v is None else f'{v:.0f} s'}"
                              for k, v in r["recovery_by_kind_s"].items())
            behaviour = LABELS[r["behaviour"]]
            print(f"recovery by kind, {r['scenario']} ({behaviour}): {kinds}")
    if not args.no_plots:
        RESULTS.mkdir(exist_ok=True)
        for scenario in (s for s in SCENARIOS if s.name in names):
            suffix = "" if args.nodes == FLEET else f"-sample{args.nodes}"  # keep the whole
            plot(scenario, [r for r in results if r["scenario"] == scenario.name],
                 RESULTS / f"fleet-{scenario.name}{suffix}.png")
    for r in results:
        for v in r["scopes"].values():
            v.pop("series", None)
    if args.json:
        args.json.write_text(json.dumps({"nodes": args.nodes, "targets_per_node": len(MIX),
                                         "wall_s": wall, "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
