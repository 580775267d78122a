"""1,000 SIGKILLs of the real daemon during writes: torn files and leaked temps must be 0.

    python -m tests.bench.crash_loop                # 1,000 kills, 2 lanes
    python tests/bench/crash_loop.py --kills 1000 --lanes 2

What is killed: `python -m bridge run --config F` processes (each its own interpreter),
against a dev stack in this process whose STS emulators run lagging clocks so every
credential lives 8 s and the daemon rewrites every output every 1-2 s (see
tests/integration/reliability/crashkit.py). Each lane is one daemon at a time with its
own output directory on /dev/shm; lanes run side by side. After each kill every file
must parse and equal a complete issued value; the temp files a kill left must be gone
once the next run has swept. Prints the figures; exit status 0 only if torn = leaked = 0.
Not collected by pytest (the file name has no test_ prefix).
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path


def main(argv: Sequence[str] | None = None) -> int:
    root = Path(__file__).resolve().parents[2]
    if str(root) not in sys.path:  # run as a script: make `tests` and `bridge` importable
        sys.path.insert(0, str(root))
    from tests.support.crashkit import DaemonKiller, KillStats, ShortLivedStack

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=1000, help="SIGKILLs in all")
    parser.add_argument("--lanes", type=int, default=2, help="daemons killed side by side")
    parser.add_argument("--seed", type=int, default=None, help="for a reproducible run")
    parser.add_argument("--max-delay", type=float, default=1.5,
                        help="latest kill, in seconds after the daemon is running")
    args = parser.parse_args(argv)
    if args.kills < 1 or args.lanes < 1:
        parser.error("--kills and --lanes must be positive")

    seed = args.seed if args.seed is not None else random.randrange(2**32)
    work = Path(tempfile.mkdtemp(prefix="sbb-", dir="/tmp"))
    tmpfs = Path(tempfile.mkdtemp(prefix="sbb-", dir="/dev/shm"))
    world = ShortLivedStack(work / "stack").start()
    killers = []
    for lane in range(args.lanes):
        lane_dir = work / f"lane{lane}"
        lane_dir.mkdir()
        outdir = tmpfs / f"lane{lane}"
        config = world.write_config(lane_dir / "bridge.yaml", outdir)
        killers.append(DaemonKiller(world, config, outdir, lane_dir, random.Random(seed + lane)))
    errors: list[BaseException] = []
    started = time.monotonic()
    progress = threading.Lock()

    def run(killer: DaemonKiller, kills: int) -> None:
        try:
            for _ in range(kills):
                killer.kill_once(max_after_running=args.max_delay)
                with progress:
                    done = sum(k.stats.kills for k in killers)
                    if done % 50 == 0:
                        print(f"  {done} kills, {time.monotonic() - started:.0f}s", flush=True)
            killer.final_clean_run()
        except BaseException as exc:  # reported below; the other lanes finish
            errors.append(exc)

    share = [args.kills // args.lanes + (i < args.kills % args.lanes) for i in range(args.lanes)]
    threads = [threading.Thread(target=run, args=(k, n)) for k, n in zip(killers, share,
                                                                          strict=True)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        world.stop()
        elapsed = time.monotonic() - started
    total = KillStats()
    for k in killers:
        total.merge(k.stats)
    print(f"seed:                     {seed}")
    print(f"kills:                    {total.kills} (SIGKILL of `python -m bridge run`, "
          f"{args.lanes} lane(s))")
    print(f"torn files found:         {len(total.torn)}")
    print(f"leaked temps:             {len(total.leaked)}")
    swept = "all swept at the next start" if not total.leaked else "NOT ALL SWEPT"
    print(f"kills that left a temp:   {total.kills_mid_write} ({total.temps_left_by_kills} "
          f"temp files, {swept})")
    print(f"sweeps verified:          {total.swept_checks}")
    print(f"credential versions seen: {len(total.versions_seen)}")
    print(f"time:                     {elapsed:.1f}s wall ({elapsed / max(1, total.kills):.2f}s "
          "per kill)")
    for problem in (total.torn + total.leaked)[:20]:
        print(f"  ! {problem}")
    for exc in errors:
        print(f"  ! lane failed: {type(exc).__name__}: {exc}")
    ok = not total.torn and not total.leaked and not errors and total.kills == args.kills
    if ok:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(tmpfs, ignore_errors=True)
    else:
        print(f"kept for inspection: {work} {tmpfs}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
