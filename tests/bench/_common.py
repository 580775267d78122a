"""Shared plumbing of the benchmarks: statistics, /proc readings, configs, processes.

Nothing here is a test; pytest collects none of it (no `test_` names). Every wait is
bounded, everything listens on loopback or a unix socket in a short /tmp directory.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml

from tests.support.process import BRIDGE
from tests.support.wait import wait_for

ROOT = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
T = TypeVar("T")


# -- statistics ----------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..1) of unsorted values."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("no values")
    rank = max(1, min(len(ordered), round(q * len(ordered) + 0.5)))
    return ordered[rank - 1]


def median(values: Iterable[float]) -> float:
    return float(statistics.median(list(values)))


# -- /proc ---------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process, its threads included (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def threads(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    return 0


# -- waiting -------------------------------------------------------------------------


# -- directories ---------------------------------------------------------------------


class Workdir:
    """A short /tmp directory (AF_UNIX paths) and a /dev/shm one (tmpfs outputs)."""

    def __init__(self, prefix: str) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
        shm = Path("/dev/shm")
        self.shm = Path(tempfile.mkdtemp(prefix=prefix, dir=shm)) if shm.is_dir() else (
            self.tmp / "shm")
        self.shm.mkdir(exist_ok=True)
        self.on_tmpfs = self.shm.parent == shm

    def cleanup(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)
        shutil.rmtree(self.shm, ignore_errors=True)


# -- the daemon's config -------------------------------------------------------------


def aws_targets(count: int, sts_url: str, role_arn: str, *,
                prefix: str = "t") -> list[dict[str, Any]]:
    width = len(str(count - 1))
    return [{"name": f"{prefix}{i:0{width}d}",
             "aws": {"role_arn": role_arn, "region": "us-east-1", "duration": "1h",
                     "sts_endpoint": sts_url}} for i in range(count)]


def write_config(path: Path, *, workload_socket: str, outputs: Path, on_tmpfs: bool,
                 targets: list[dict[str, Any]], grpc_socket: Path | None = None,
                 http: bool = True, concurrency: int | None = None) -> Path:
    doc: dict[str, Any] = {
        "workload_api": {"socket": workload_socket, "timeout": "10s"},
        "outputs": {"directory": str(outputs), "allow_non_tmpfs": not on_tmpfs},
        "grpc": {"socket": f"unix://{grpc_socket or path.parent / 'bridge.sock'}"},
        "targets": targets,
    }
    if http:
        doc["http"] = {"address": "127.0.0.1:0"}
    if concurrency is not None:
        doc["refresh"] = {"concurrency": concurrency}
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


# -- child processes -----------------------------------------------------------------


def bytecode_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for a daemon process: bytecode cached as `pip install` leaves it.

    This sandbox sets PYTHONDONTWRITEBYTECODE and the package is an editable install
    without __pycache__, so every start would recompile bridge/ from source (an
    installed wheel never does). A private PYTHONPYCACHEPREFIX under /tmp holds the
    bytecode instead, outside the repository; the first run fills it.
    """
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(Path(tempfile.gettempdir()) / "spiffe-bridge-bench-pyc")
    env["PYTHONPATH"] = str(ROOT)
    env.update(extra or {})
    return env


def warm_bytecode(env: dict[str, str]) -> None:
    """One throw-away interpreter that imports what `run` imports, filling the cache."""
    subprocess.run([PYTHON, "-c", "import bridge.cli, bridge.app"],
                   env=env, cwd=ROOT, check=True, timeout=120)


class Daemon:
    """`python -m bridge run --config F` as a child process; ended through its handle."""

    def __init__(self, config: Path, log: Path, env: dict[str, str],
                 argv_prefix: Sequence[str] = ()) -> None:
        self.config, self.log, self.env = config, log, env
        module = BRIDGE[1:] if not os.environ.get("BENCH_WRAP") else (
            os.environ["BENCH_WRAP"],)
        self.argv = [*argv_prefix, PYTHON, *module, "run", "--config", str(config),
                     "--log-level", "INFO"]
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0
        self._bridge_pid: int | None = None

    def start(self) -> float:
        with self.log.open("ab") as out:
            self.started_at = time.monotonic()
            self.proc = subprocess.Popen(self.argv, env=self.env, cwd=ROOT,
                                         stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=subprocess.STDOUT)
        if self.profiled:  # learn the bridge's pid while py-spy is its parent
            try:
                self._bridge_pid = self.bridge_pid
            except BaseException:
                self.stop()
                raise
        return self.started_at

    @property
    def profiled(self) -> bool:
        return "py-spy" in self.argv[0]

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"daemon exited with {self.proc.returncode}:\n"
                               f"{self.log.read_text(errors='replace')[-3000:]}")

    @property
    def bridge_pid(self) -> int:
        """The bridge's own pid: under py-spy, py-spy's child."""
        if not self.profiled:
            return self.pid
        if self._bridge_pid is None:
            children = Path(f"/proc/{self.pid}/task/{self.pid}/children")

            def child() -> list[str] | None:
                self.check_alive()
                return children.read_text().split()
            self._bridge_pid = int(wait_for(child, "py-spy's child", timeout=10, interval=0.01)[0])
        return self._bridge_pid

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM (to the bridge itself under py-spy, which then writes its profile)."""
        proc = self.proc
        if self._bridge_pid is not None:  # under py-spy: end the bridge itself, first
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._bridge_pid, signal.SIGTERM)
            if proc is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout)
            _wait_gone(self._bridge_pid, timeout)
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def _wait_gone(pid: int, timeout: float) -> None:
    """Until `pid` has exited (SIGKILL after `timeout`); it is our grandchild under py-spy."""
    deadline = time.monotonic() + timeout
    while Path(f"/proc/{pid}").exists() and "zombie" not in _state(pid):
        if time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            return
        time.sleep(0.05)


def _state(pid: int) -> str:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("State:"):
                return line
    except OSError:
        pass
    return "zombie"


def report(results: dict[str, Any], text: str, json_path: Path | None) -> None:
    """Print a benchmark's table; keep its raw figures as JSON when asked (`--json`)."""
    print(text)
    if json_path is not None:
        json_path.write_text(json.dumps(results, indent=2))


def machine() -> dict[str, Any]:
    return {"date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "cores": os.cpu_count(),
            "python": platform.python_version(), "platform": platform.platform(),
            "load_avg": os.getloadavg()}


# -- profiles ------------------------------------------------------------------------


def py_spy() -> str | None:
    """py-spy next to this interpreter, else on PATH (pip install py-spy)."""
    local = Path(PYTHON).parent / "py-spy"
    return str(local) if local.exists() else shutil.which("py-spy")


def py_spy_prefix(out: Path, *, gil: bool | None = None, rate: int = 250) -> list[str]:
    """argv prefix that runs a command under `py-spy record` into collapsed stacks.

    `--gil`: only samples holding the GIL, i.e. where the interpreter's one core goes.
    """
    if gil is None:
        gil = os.environ.get("BENCH_PYSPY_GIL", "1") == "1"
    exe = py_spy()
    if exe is None:
        raise RuntimeError("py-spy is not installed (pip install py-spy)")
    native = os.environ.get("BENCH_PYSPY_NATIVE") == "1"
    return [exe, "record", "--rate", str(rate), "--format", "raw",
            *(["--native"] if native else ["--nonblocking"]),
            *(["--gil"] if gil else []), "-o", str(out), "--"]


_PLUMBING = ("threading.py", "runpy", "asyncio/runners.py", "bridge/__main__.py",
             "concurrent/futures/thread.py", "multiprocessing/", "<string>")


def top_entries(collapsed: Path, n: int = 12) -> dict[str, list[tuple[str, float]]]:
    """From py-spy's raw (collapsed-stack) output: the functions with the most samples
    inclusive and self, as % of all samples; thread and event-loop plumbing left out."""
    total = 0
    self_count: dict[str, int] = {}
    incl: dict[str, int] = {}
    for line in collapsed.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = [re.sub(r":\d+\)$", ")", f) for f in stack.split(";") if f]
        leaf = frames[-1] if frames else "(native, no Python frame)"
        self_count[leaf] = self_count.get(leaf, 0) + count
        for frame in set(frames):
            incl[frame] = incl.get(frame, 0) + count
    if not total:
        return {"inclusive": [], "self": []}

    def keep(frame: str) -> bool:
        return not any(p in frame for p in _PLUMBING) and not frame.startswith(
            ("BaseEventLoop.run_", "BaseEventLoop._run_once", "Handle._run", "main ",
             "_main ", "<module> ", "run ("))

    def rows(counts: dict[str, int], only: Callable[[str], bool]) -> list[tuple[str, float]]:
        ordered = sorted((f for f in counts if only(f)), key=lambda f: -counts[f])
        return [(f, 100 * counts[f] / total) for f in ordered[:n]]

    # Self time keeps the event loop's Handle._run: grpc's Cython code runs inside it.
    return {"inclusive": rows(incl, keep), "self": rows(self_count, lambda f: True),
            "bridge": rows(incl, lambda f: "(bridge/" in f and keep(f)),
            "samples": [("all", float(total))]}


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds per thread name (comm) of a process: grpc's C threads name
    themselves, Python's threads all show the interpreter's name."""
    out: dict[str, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            name = (task / "comm").read_text().strip()
            fields = (task / "stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return out


def user_sys(pid: int) -> tuple[float, float]:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def context_switches(pid: int) -> int:
    """Voluntary + involuntary context switches over all threads of a process."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            text = (task / "status").read_text()
        except OSError:
            continue
        for line in text.splitlines():
            if line.endswith("ctxt_switches:") or "ctxt_switches:" in line:
                total += int(line.split()[1])
    return total
