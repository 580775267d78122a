"""Fault scenario: SIGTERM during a write, RELIABILITY.md (a) row 14.

- The real daemon process (`python -m bridge run`) is signalled the moment inotify
  reports one of its credential temp files being created, i.e. in the middle of a
  write pass, on the first and then the fourth such temp file of a run (the second run
  starts from the first run's files). It must exit 0 within the gRPC grace period, leave every file
  complete (old or new, each one a credential the emulators issued), no temp file, and
  nothing expired or torn may be read from it while it runs.
- Writes follow refreshes, so that signal often lands just as a refresh or a write pass
  completes. Two in-process tests pin those two instants deterministically (the stop
  event the SIGTERM handler sets is set at that exact point): the daemon must still
  stop. On Python 3.11 both hang today: `asyncio.wait_for` swallows a cancellation
  that arrives as the awaited call completes (CPython gh-86296, fixed in 3.12), in
  `Scheduler.refresh` and in `OutputWriter.run`; the cancelled task goes back to sleep
  (30 minutes, until the next refresh) and `serve()` waits for it forever.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from bridge.config import load_config
from bridge.devstack import DevStack
from bridge.model import TargetStatus
from bridge.outputs import atomic
from bridge.refresh.pipeline import Timings
from tests.support.expiry import (
    MakeScenario,
    Scenario,
    StartChecker,
    inotify,
    target_doc,
    temp_files,
    write_config,
)
from tests.support.process import start_bridge

pytestmark = pytest.mark.integration
KILL_AT = (1, 4)  # SIGTERM on the creation of the 1st, then the 4th temp file of a run
EXIT_WITHIN = 10.0  # the gRPC grace period is 5 s; nothing else may take long
STOP_WITHIN = 5.0
STUCK = {"Scheduler._run_target", "Scheduler._run_jwt", "OutputWriter.run"}


def test_sigterm_during_a_write_exits_0_with_complete_files_and_no_temp(
        stack: DevStack, outdir: Path, short_dir: Path, expiry_checker: StartChecker) -> None:
    targets = [target_doc("aws", stack, name="a1", jwt_file=True),
               target_doc("aws", stack, name="a2"),
               target_doc("gcp", stack, name="g1", jwt_file=True)]
    path = write_config(short_dir / "bridge.yaml", stack, outdir, targets)
    subdirs = [outdir / d for d in ("aws", "gcp", "jwt")]
    for d in (outdir, *subdirs):
        d.mkdir(mode=0o700)  # before the daemon runs, so inotify can watch them
    checker = expiry_checker(load_config(path), aws=[stack.aws], gcp=[stack.gcp])
    report = []
    for nth in KILL_AT:
        # A cold start each time: credentials recovered from the last run are replaced
        # spread over their safe window, so a warm start may write nothing for minutes.
        for d in subdirs:
            for f in d.iterdir():
                f.unlink()
        with inotify(subdirs) as events:
            proc = start_bridge("run", "--config", str(path))
            try:
                created: list[str] = []
                deadline = time.monotonic() + 20
                while len(created) < nth:
                    assert time.monotonic() < deadline, "the daemon wrote nothing in 20 s"
                    assert proc.poll() is None, proc.communicate()[1][-2000:]
                    created += [n for n in events(0.2) if atomic.TEMP_MARK in n
                                and not n.startswith("jwt/")]  # a credential file's
                signalled = time.monotonic()
                proc.send_signal(signal.SIGTERM)
                try:
                    _, err = proc.communicate(timeout=EXIT_WITHIN)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    _, err = proc.communicate()
                    pytest.fail(f"SIGTERM on temp file #{nth}: the daemon was still running "
                                f"{EXIT_WITHIN:.0f}s later (killed); its log:\n{err[-1500:]}")
                took = time.monotonic() - signalled
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.communicate()
            after = [n for n in events(0) if atomic.TEMP_MARK in n]
        assert proc.returncode == 0, err[-3000:]
        assert "spiffe-bridge stopped" in err
        assert "Traceback" not in err
        assert temp_files(outdir) == []
        sweep = checker.sweep()  # every file present is whole and was really issued
        files = {c: r.outcome for c, r in sweep.reads.items() if c.startswith("file:")}
        assert set(files.values()) <= {"served", "absent"}, files
        assert "served" in files.values()
        report.append(f"SIGTERM on temp file #{nth}: exit 0 after {took:.2f}s, "
                      f"{len(created) - nth + len(after)} temp file(s) created after it, "
                      f"{sorted(c for c, o in files.items() if o == 'served')} in place")
    print("\n".join(report))


def _stop_now(s: Scenario) -> None:
    """What the SIGTERM handler does (`stop.set()`), called on the daemon's loop."""
    s.bridge._stop.set()  # RunningBridge.close() without its wait


def _assert_stops(s: Scenario) -> None:
    try:
        s.bridge._task.exception(STOP_WITHIN)  # serve() returned
    except concurrent.futures.TimeoutError:
        async def survivors() -> list[str]:
            left = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in left:  # cancel the stuck loops again, so that serve() can return
                if _coro_name(t) in STUCK:
                    t.cancel()
            return sorted(f"{t.get_name()} ({_coro_name(t)}, cancelling={t.cancelling()})"
                          for t in left)
        pytest.fail(f"the daemon did not stop within {STOP_WITHIN:.0f}s of SIGTERM; tasks "
                    f"that ignored the cancellation: {s.bridge.call(survivors())}")


def _coro_name(task: asyncio.Task[object]) -> str:
    return str(getattr(task.get_coro(), "__qualname__", "?"))


def test_sigterm_the_moment_an_exchange_returns_still_stops_the_daemon(
        scenario: MakeScenario, monkeypatch: pytest.MonkeyPatch) -> None:
    s = scenario(virtual=True, metadata=True)
    armed = threading.Event()
    add = Timings.add

    def add_then_stop(self: Timings, stage: str, seconds: float) -> None:
        add(self, stage, seconds)
        if stage == "exchange" and armed.is_set():  # the STS call has just returned
            armed.clear()
            _stop_now(s)

    monkeypatch.setattr(Timings, "add", add_then_stop)
    armed.set()
    s.vt.advance_to_wake("refresh:aws", settle=False)
    assert not armed.is_set(), "the scheduled refresh did not run"
    _assert_stops(s)


def test_sigterm_the_moment_outputs_are_due_still_stops_the_daemon(
        scenario: MakeScenario) -> None:
    s = scenario(virtual=True, metadata=True)
    armed = threading.Event()

    def stop_with_the_write(_name: str, _status: TargetStatus) -> None:
        if armed.is_set():  # right after the writer was told to write
            armed.clear()
            s.bridge.loop.call_soon_threadsafe(_stop_now, s)

    s.bridge.daemon.store.subscribe(stop_with_the_write)
    armed.set()
    s.vt.advance_to_wake("refresh:aws", settle=False)
    assert not armed.is_set(), "the scheduled refresh did not run"
    _assert_stops(s)
