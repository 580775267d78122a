"""`make bench`: every benchmark, one summary table, raw output kept in tests/bench/results.

Runs each bench as its own process (bounded by a timeout), collects its JSON, prints one
table (benchmark, figure, baseline, ratio, target, met?) and writes
tests/bench/results/<date>.txt (header with date, cores, Python, load and the exact
command; the summary; every bench's own output; profiles of missed targets) and
<date>.json (everything measured). For each missed target a profile is taken with
py-spy (GIL samples, so where the interpreter's one core goes) and its top entries are
printed; without py-spy that step says so and is skipped.

    python -m tests.bench.run_all [--quick] [--no-profiles] [--command "make bench"]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.bench._common import PYTHON, ROOT, bytecode_env, machine, py_spy, top_entries

RESULTS = Path(__file__).resolve().parent / "results"
BUDGET = 600.0  # seconds: `make bench` must finish within 10 minutes on this machine


class Bench:
    def __init__(self, name: str, module: str, args: list[str], timeout: float) -> None:
        self.name, self.module, self.args, self.timeout = name, module, args, timeout
        self.output = ""
        self.data: dict[str, Any] | None = None
        self.error = ""
        self.seconds = 0.0

    def run(self, tmp: Path) -> None:
        out = tmp / f"{self.name}.json"
        argv = [PYTHON, "-m", f"tests.bench.{self.module}", *self.args, "--json", str(out)]
        started = time.monotonic()
        try:
            proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True,
                                  timeout=self.timeout, check=False, env=bytecode_env())
            self.output = proc.stdout + (f"\n[stderr]\n{proc.stderr[-4000:]}"
                                         if proc.returncode else "")
            if proc.returncode == 0:
                self.data = json.loads(out.read_text())
            else:
                self.error = f"exit {proc.returncode}: {proc.stderr.strip()[-300:]}"
        except subprocess.TimeoutExpired as exc:
            self.error = f"timed out after {self.timeout:.0f} s"
            self.output = str(exc.stdout or "")
        self.seconds = time.monotonic() - started


def benches(quick: bool) -> list[Bench]:
    q = quick
    return [
        Bench("refresh", "bench_refresh", ["--refreshes", "100" if q else "300"], 240),
        Bench("grpc", "bench_grpc", ["--calls", "1000" if q else "2000", "--rounds",
                                     "2" if q else "5"], 360),
        Bench("metadata", "bench_metadata", ["--requests", "1500" if q else "2000",
                                             "--rounds", "2" if q else "5"], 240),
        Bench("scale", "bench_scale", ["--rounds", "1" if q else "2", "--idle",
                                       "10" if q else "30", "--warmup", "5"], 420),
        Bench("startup", "bench_startup", ["--runs", "3" if q else "7"], 240),
        Bench("scrape", "bench_scrape", ["--rounds", "10" if q else "30"], 180),
        Bench("credential_process", "bench_credential_process",
              ["--rounds", "5" if q else "15"], 240),
        Bench("memory", "bench_memory", ["--runs", "1" if q else "3"], 300),
        # A sample of the fleet (quotas scaled) to stay within a few minutes; the README's
        # figures are the whole 10,000 nodes (`python -m tests.bench.bench_fleet`).
        Bench("fleet", "bench_fleet", ["--nodes", "500" if q else "2000"], 600),
        Bench("roles_anywhere", "bench_roles_anywhere",
              ["--refreshes", "50" if q else "200"], 180),
        Bench("broker", "bench_broker", ["--identities", "3" if q else "5", "--calls",
                                         "100" if q else "200"], 300),
    ]


# -- the summary table -----------------------------------------------------------------

Row = tuple[str, str, str, str, str, str]


def _met(ok: bool | None) -> str:
    return "info" if ok is None else ("yes" if ok else "NO")


def rows_refresh(d: dict[str, Any]) -> list[Row]:
    b, r = d["bridge"], d["direct"]
    return [
        ("1 refresh overhead, median", f"{b['median_ms']:.2f} ms",
         f"direct {r['median_ms']:.2f} ms", f"{d['ratio_median']:.2f}", "<= 1.05",
         _met(d["ratio_median"] <= 1.05)),
        ("1 refresh overhead, p99", f"{b['p99_ms']:.2f} ms", f"direct {r['p99_ms']:.2f} ms",
         f"{d['ratio_p99']:.2f}", "-", _met(None)),
        ("1 refresh CPU (this process)", f"{d['cpu_ms_per_refresh']['bridge']:.2f} ms",
         f"direct {d['cpu_ms_per_refresh']['direct']:.2f} ms",
         f"{d['cpu_ms_per_refresh']['bridge'] / d['cpu_ms_per_refresh']['direct']:.2f}", "-",
         _met(None)),
    ]


def rows_grpc(d: dict[str, Any]) -> list[Row]:
    out: list[Row] = []
    for r in d["rows"]:
        c, b = r["concurrency"], r["bridge"]
        for name, key in (("min-bytes", "ratio_bytes"), ("min-servicer", "ratio_servicer")):
            out.append((f"2 GetCredential, {c} client{'s' * (c > 1)}", f"{b['rps']:.0f} rps",
                        f"{name} {r[name]['rps']:.0f} rps", f"{r[key]:.2f}", ">= 0.95",
                        _met(r[key] >= 0.95)))
        if "p50_vs_agent" in r:
            agent = r["spire-agent"]["p50_ms"]
            out.append((f"2 GetCredential p50, {c} client{'s' * (c > 1)}",
                        f"{b['p50_ms']:.2f} ms", f"SPIRE FetchJWTSVID {agent:.2f} ms",
                        f"{r['p50_vs_agent']:.2f}", "<= 1.00", _met(r["p50_vs_agent"] <= 1.0)))
            floor = r["min-servicer"]["p50_ms"]
            out.append((f"2 min-servicer p50, {c} client{'s' * (c > 1)}", f"{floor:.2f} ms",
                        f"SPIRE FetchJWTSVID {agent:.2f} ms", f"{floor / agent:.2f}", "-",
                        _met(None)))
        else:
            out.append((f"2 GetCredential p50, {c} client{'s' * (c > 1)}",
                        f"{b['p50_ms']:.2f} ms", "SPIRE agent: skipped", "-", "<= 1.00",
                        "skipped"))
        cpu_ratio = r["cpu_ratio_servicer"]
        out.append((f"2 server CPU per call, {c} client{'s' * (c > 1)}",
                    f"{b['cpu_us']:.0f} us", f"min-servicer {r['min-servicer']['cpu_us']:.0f} us",
                    f"{cpu_ratio:.2f}", "-", _met(None)))
        out.append((f"2 guarded (caller SVID), {c} client{'s' * (c > 1)}",
                    f"{r['guarded']['rps']:.0f} rps", f"min-bytes {r['min-bytes']['rps']:.0f} rps",
                    f"{r['ratio_guarded']:.2f}", ">= 0.90", _met(r["ratio_guarded"] >= 0.90)))
    return out


def rows_metadata(d: dict[str, Any]) -> list[Row]:
    return [(f"2 metadata container, {r['concurrency']} client{'s' * (r['concurrency'] > 1)}",
             f"{r['bridge']['rps']:.0f} rps", f"http.server {r['minimal']['rps']:.0f} rps",
             f"{r['ratio']:.2f}", ">= 0.90", _met(r["ratio"] >= 0.90)) for r in d["rows"]]


def rows_scale(d: dict[str, Any]) -> list[Row]:
    m = d["median"]
    out: list[Row] = [
        (f"3 fill {d['targets']} targets (+{d['latency_s'] * 1000:.0f} ms/call)",
         f"{m['fill_s']:.2f} s", f"ideal {m['ideal_s']:.2f} s", f"{m['ratio']:.2f}", "<= 1.25",
         _met(m["ratio"] <= 1.25)),
    ]
    if "direct_fill_s" in m:
        out.append(("3 fill, same calls from 32 threads", f"{m['fill_s']:.2f} s",
                    f"direct {m['direct_fill_s']:.2f} s", f"{m['direct_ratio']:.2f}", "-",
                    _met(None)))
        out.append(("3 fill of the direct client", f"{m['direct_fill_s']:.2f} s",
                    f"ideal {m['ideal_s']:.2f} s", f"{m['direct_ideal_ratio']:.2f}", "-",
                    _met(None)))
    percent = m["idle_cpu_s_per_min"] / 60 * 100
    out += [
        ("3 idle CPU, 1000 targets", f"{m['idle_cpu_s_per_min']:.3f} s/min",
         "one core 60 s/min", f"{percent:.2f} %", "< 1 %", _met(percent < 1.0)),
        ("3 RSS, 1000 targets", f"{m['rss_mb']:.0f} MB", "-", "-", "< 150 MB",
         _met(m["rss_mb"] < 150)),
    ]
    return out


def rows_startup(d: dict[str, Any]) -> list[Row]:
    return [("4 start to first credential", f"{d['median_s']:.3f} s",
             f"direct script {d['direct_median_s']:.3f} s", f"{d['ratio']:.2f}", "< 1.0 s",
             _met(d["median_s"] < 1.0))]


def rows_scrape(d: dict[str, Any]) -> list[Row]:
    b, p, n = d["bridge"], d["prometheus-client"], d["targets"]
    return [
        (f"6 /metrics render, {n} targets, median", f"{b['median_ms']:.1f} ms",
         f"prometheus-client {p['median_ms']:.0f} ms", f"{d['ratio_median']:.3f}", "< 50 ms",
         _met(d["met_time"])),
        (f"6 /metrics page, {n} targets, gzip", f"{b['gzip_kb']:.0f} KB",
         f"prometheus-client {p['gzip_kb']:.0f} KB", f"{b['gzip_kb'] / p['gzip_kb']:.2f}",
         "< 300 KB", _met(d["met_size"])),
        (f"6 /metrics page, {n} targets, raw", f"{b['raw_kb']:.0f} KB",
         f"prometheus-client {p['raw_kb']:.0f} KB", f"{b['raw_kb'] / p['raw_kb']:.2f}", "-",
         _met(None)),
    ]


def rows_credential_process(d: dict[str, Any]) -> list[Row]:
    rows, bare = d["rows"], d["rows"]["python -c pass"]
    fast, full = rows["fast --config"], rows["full --config"]
    return [
        ("9 credential_process via daemon", f"{fast['median_ms']:.0f} ms",
         f"python -c pass {bare['median_ms']:.0f} ms", f"{fast['x_bare']:.2f}", "<= 1.5",
         _met(fast["x_bare"] <= 1.5)),
        ("9 credential_process, full CLI", f"{full['median_ms']:.0f} ms",
         f"python -c pass {bare['median_ms']:.0f} ms", f"{full['x_bare']:.2f}", "-",
         _met(None)),
    ]


def rows_broker(d: dict[str, Any]) -> list[Row]:
    c, w, t = d["cold"], d["warm"], d["configured"]
    return [
        ("11 workload first credential (broker, cold)", f"{c['median_ms']:.1f} ms",
         f"warm {w['median_ms']:.2f} ms", f"{d['cold_vs_warm']:.1f}", "-", _met(None)),
        ("11 workload cached (attested per call)", f"{w['median_ms']:.2f} ms",
         f"configured {t['median_ms']:.2f} ms", f"{d['warm_vs_configured']:.1f}", "-",
         _met(None)),
    ]


def rows_memory(d: dict[str, Any]) -> list[Row]:
    return [(f"10 {cloud} daemon RSS, one target", f"{c['rss_mb']:.1f} MB",
             f"import floor {c['floor_mb']:.1f} MB", f"{c['ratio']:.2f}", "<= 1.15",
             _met(c["ratio"] <= 1.15 and not c["other_cloud_imported"]))
            for cloud, c in d["clouds"].items()]


def rows_fleet(d: dict[str, Any]) -> list[Row]:
    """Per scenario and fleet behaviour (spread; phase-locked with `node_index`): the
    worst scope against today's behaviour."""
    out: list[Row] = []
    by = {(r["scenario"], r.get("behaviour", "spread" if r["fleet_work"] else "today")): r
          for r in d["results"]}
    labels = {"spread": "", "locked": " (node_index)"}
    for (scenario, behaviour), r in by.items():
        today = by.get((scenario, "today"))
        if behaviour == "today" or today is None:
            continue
        name = f"7 fleet {scenario}{labels[behaviour]}"
        over = max(v["longest_over_quota_s"] for v in r["scopes"].values())
        was = max(v["longest_over_quota_s"] for v in today["scopes"].values())
        out.append((f"{name}: longest run over quota", f"{over} s", f"today {was} s",
                    "-", "<= 1 s", _met(over <= 1)))
        out.append((f"{name}: lapses", f"{r['lapses']}",
                    f"today {today['lapses']}", "-", "0" if scenario != "outage" else "-",
                    _met(r["lapses"] == 0) if scenario != "outage" else _met(None)))
        if scenario == "steady":
            for key, span in (("peak_over_mean", "1 s"), ("peak_over_mean_60s", "60 s")):
                worst = max(v[key] for v in r["scopes"].values())
                was_worst = max(v[key] for v in today["scopes"].values())
                out.append((f"{name}: peak/mean ({span})", f"{worst:.2f}",
                            f"today {was_worst:.2f}", "-", "<= 1.2", _met(worst <= 1.2)))
        if r["recovery_s"] is not None or r["never_recovered"]:
            rec = "never" if r["never_recovered"] else f"{r['recovery_s']:.0f} s"
            was_rec = "never" if today["never_recovered"] else (
                "-" if today["recovery_s"] is None else f"{today['recovery_s']:.0f} s")
            target = "<= 120 s" if scenario == "outage" else "-"
            out.append((f"{name}: time to recovery", rec, f"today {was_rec}", "-",
                        target, _met(r["recovery_s"] is not None and r["recovery_s"] <= 120)
                        if scenario == "outage" else _met(None)))
    return out


def rows_roles_anywhere(d: dict[str, Any]) -> list[Row]:
    b, r = d["bridge"], d["direct"]
    return [
        ("8 Roles Anywhere refresh, median", f"{b['median_ms']:.2f} ms",
         f"direct signer {r['median_ms']:.2f} ms", f"{d['ratio_median']:.2f}", "-",
         _met(None)),
        ("8 Roles Anywhere refresh, p99", f"{b['p99_ms']:.2f} ms",
         f"direct signer {r['p99_ms']:.2f} ms", f"{d['ratio_p99']:.2f}", "-", _met(None)),
    ]


ROWS: dict[str, Callable[[dict[str, Any]], list[Row]]] = {
    "refresh": rows_refresh, "grpc": rows_grpc, "metadata": rows_metadata,
    "scale": rows_scale, "startup": rows_startup, "scrape": rows_scrape, "fleet": rows_fleet,
    "roles_anywhere": rows_roles_anywhere, "credential_process": rows_credential_process,
    "memory": rows_memory, "broker": rows_broker}
LABELS = {"refresh": "1 refresh overhead", "grpc": "2 read path (gRPC)",
          "metadata": "2 read path (metadata)", "scale": "3 scale", "startup": "4 startup",
          "scrape": "6 scrape", "fleet": "7 fleet simulation",
          "roles_anywhere": "8 Roles Anywhere refresh",
          "credential_process": "9 credential_process", "memory": "10 sidecar memory",
          "broker": "11 per-workload credentials (broker)"}


def render(rows: list[Row]) -> str:
    head: Row = ("benchmark", "figure", "baseline", "ratio", "target", "met?")
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(6)]
    line = "+" + "+".join("-" * (w + 2) for w in widths) + "+"

    def fmt(r: Row) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |"
    return "\n".join([line, fmt(head), line, *(fmt(r) for r in rows), line])


# -- profiles of missed targets ----------------------------------------------------------


def _profile(name: str, tmp: Path) -> str:
    """Run the profile for a missed benchmark; return its top entries as text."""
    if py_spy() is None:
        return "profile skipped: py-spy is not installed (pip install py-spy)"
    out = tmp / f"{name}.collapsed"
    if name == "refresh":
        argv = [PYTHON, "-m", "tests.bench.bench_refresh", "--refreshes", "600",
                "--profile", str(out)]
        what = ("py-spy --gil of 600 bridge refreshes (bridge side only, after warm-up; "
                "the direct side's calls are the botocore and grpc frames below)")
    elif name == "scale":
        argv = [PYTHON, "-m", "tests.bench.bench_scale", "--rounds", "1", "--idle", "1",
                "--warmup", "0", "--no-direct", "--profile", str(tmp / "scale")]
        out = tmp / "scale" / "scale0.collapsed"
        what = "py-spy --gil of the daemon during one 1000-target fill"
    elif name == "grpc":
        argv = [PYTHON, "-m", "tests.bench.bench_grpc", "--profile", str(out)]
        what = ("py-spy --gil of the bridge's gRPC server under 8 clients (grpc's Cython "
                "code runs inside Handle._run)")
    elif name == "metadata":
        argv = [PYTHON, "-m", "tests.bench.bench_metadata", "--profile", str(out)]
        what = "py-spy --gil of the bridge's container endpoint under 8 clients"
    else:
        return f"no profile for {name}"
    try:
        subprocess.run(argv, cwd=ROOT, capture_output=True, timeout=120, check=True,
                       env=bytecode_env())
    except (subprocess.SubprocessError, OSError) as exc:
        return f"profile failed: {exc}"
    if not out.exists():
        return "profile produced no output"
    top = top_entries(out)
    lines = [f"{what}; {top['samples'][0][1]:.0f} samples",
             "  top inclusive:"]
    lines += [f"    {p:5.1f}%  {f}" for f, p in top["inclusive"]]
    lines.append("  top self:")
    lines += [f"    {p:5.1f}%  {f}" for f, p in top["self"]]
    lines.append("  top bridge/ functions (inclusive):")
    lines += [f"    {p:5.1f}%  {f}" for f, p in top["bridge"]]
    return "\n".join(lines)


def _missed(rows: list[Row]) -> bool:
    return any(r[5] == "NO" for r in rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds (a smoke run)")
    parser.add_argument("--no-profiles", action="store_true")
    parser.add_argument("--command", default=None, help="how this run was started")
    parser.add_argument("--only", nargs="*", help="run only these (refresh grpc ...)")
    args = parser.parse_args(argv)
    started = time.monotonic()
    info = machine()
    command = args.command or " ".join([sys.executable, "-m", "tests.bench.run_all",
                                        *(argv if argv is not None else sys.argv[1:])])
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                            capture_output=True, text=True, check=False).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--", "bridge"], cwd=ROOT,
                           capture_output=True, text=True, check=False).stdout.strip()
    header = [f"spiffe-bridge benchmarks  {info['date']}",
              f"command: {command}",
              f"machine: {info['cores']} cores, Python {info['python']}, {info['platform']}, "
              f"load average at start {', '.join(f'{x:.2f}' for x in info['load_avg'])}",
              f"code: {commit}{' + uncommitted changes in bridge/' if dirty else ''}"]
    print("\n".join(header), flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="sbb-run-"))
    selected = [b for b in benches(args.quick) if not args.only or b.name in args.only]
    all_rows: list[Row] = []
    sections: list[str] = []
    profiles: dict[str, str] = {}
    for i, bench in enumerate(selected, 1):
        print(f"[{i}/{len(selected)}] {LABELS[bench.name]} ...", end=" ", flush=True)
        bench.run(tmp)
        print(f"{bench.seconds:.0f} s{' (' + bench.error + ')' if bench.error else ''}",
              flush=True)
        rows = ROWS[bench.name](bench.data) if bench.data else [
            (LABELS[bench.name], "-", "-", "-", "-", f"error: {bench.error[:60]}")]
        all_rows += rows
        sections.append(f"==== {LABELS[bench.name]} ({bench.seconds:.0f} s): "
                        f"python -m tests.bench.{bench.module} {' '.join(bench.args)}\n"
                        f"{bench.output.rstrip()}")
        if not args.no_profiles and _missed(rows):
            left = BUDGET - 60 - (time.monotonic() - started)
            if left > 120:
                print("      profiling the miss ...", end=" ", flush=True)
                t0 = time.monotonic()
                profiles[bench.name] = _profile(bench.name, tmp)
                print(f"{time.monotonic() - t0:.0f} s", flush=True)
            else:
                profiles[bench.name] = "profile skipped: not enough of the time budget left"
    wall = time.monotonic() - started
    all_rows.append(("5 make bench wall time", f"{wall / 60:.1f} min", "-", "-", "< 10 min",
                     _met(wall < BUDGET)))
    table = render(all_rows)
    print(table)
    for name, text in profiles.items():
        print(f"\nprofile of the missed {LABELS[name]} target:\n{text}")
    RESULTS.mkdir(exist_ok=True)
    stamp = time.strftime("%Y-%m-%dT%H%M%S")
    text = "\n".join([*header, "", table, "",
                      *(f"profile of the missed {LABELS[n]} target:\n{t}\n"
                        for n, t in profiles.items()),
                      *sections, ""])
    (RESULTS / f"{stamp}.txt").write_text(text)
    (RESULTS / f"{stamp}.json").write_text(json.dumps({
        "machine": info, "command": command, "commit": commit, "dirty": bool(dirty),
        "wall_s": wall, "rows": all_rows, "profiles": profiles,
        "benches": {b.name: {"args": b.args, "seconds": b.seconds, "error": b.error,
                             "data": b.data} for b in selected}}, indent=2, default=str))
    print(f"\nraw output: {(RESULTS / f'{stamp}.txt').relative_to(ROOT)} (and .json)"
          + (f"; full profiles (collapsed stacks) in {tmp}" if profiles else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
