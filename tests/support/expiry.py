"""The fault-scenario harness: a never-expired checker, virtual time, and a world to run in.

- `ExpiryChecker` is a bounded background thread that, while a scenario runs, keeps
  reading every output the bridge serves: the files (`aws/<t>.json`, `aws/credentials`,
  `gcp/<t>.json`, `gcp/<t>.token`), gRPC `GetCredential` per target, and the metadata
  endpoints that are configured (container, IMDSv2, GCE). Each credential read is looked
  up in the emulators' own records (what was really issued, and when it really expires)
  and judged by the scenario's clock (the real one, or the injected `FakeClock`). It
  records every response that carries a credential past its expiry (as served, or as the
  emulator knows it), a served expiry later than the real one, a credential no emulator
  issued, and every torn or unparseable file. The `scenario` fixture asserts at teardown
  that there were none, and that reads were made.

  Files are the one output that cannot disappear at the exact instant of expiry: the
  writer removes them when the scheduler drops the credential, a few milliseconds later.
  A file read after its credential's expiry is a violation only when it happens more
  than `FILE_GRACE` real seconds after the judging clock passed that expiry; every such
  late read is kept (`late_file_lags`) so tests can report the lag. gRPC and metadata
  replies are judged strictly against the time the request was sent.

- `VirtualTime` drives a `FakeClock` shared by the daemon (`build(clock=...)`) and the
  emulators (`clock=`): it advances to each parked task's wake-up in turn and waits for
  the woken refreshes (real I/O in worker threads) to finish before moving on, so hours
  of schedule run in well under a second, in a known order.

- `Scenario` (built by the `scenario` fixture in conftest.py): a dev stack, the daemon
  in-process (`tests.support.running.RunningBridge`), and the checker, torn down in that order.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import hashlib
import http.client
import json
import os
import re
import select
import struct
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import jwt
import yaml

from bridge.client import ApiError, BridgeClient
from bridge.clouds.aws import AwsCredentials
from bridge.clouds.gcp import GcpToken
from bridge.config import Config
from bridge.devstack import DEMO_ROLE_ARN, DEMO_SERVICE_ACCOUNT, GCP_PROVIDER, DevStack
from bridge.devstack.aws import AwsStsEmulator, IssuedCredentials
from bridge.devstack.gcp import GcpEmulator
from bridge.model import State, parse_utc_iso
from bridge.outputs import atomic
from bridge.testing import FakeClock
from tests.support.running import RunningBridge
from tests.support.wait import wait_for

FILE_GRACE = 1.0  # real seconds a file may outlive its credential (writer reaction time)
CHECK_PERIOD = 0.02  # pause between two sweeps of every output
CHECK_LIMIT = 180.0  # the checker thread stops by itself after this long (bounded)
READ_TIMEOUT = 2.0  # per gRPC / HTTP read
FOREVER = 100_000  # "fail every call from now on" for fault switches

AWS_KEY = re.compile(r"ASIA[A-Z0-9]{16}")


def channels(*targets: str, metadata: bool = True) -> set[str]:
    """The output channels of the standard `aws`/`gcp` targets (`Sweep` keys)."""
    found: set[str] = set()
    if "aws" in targets:
        found |= {"file:aws/aws.json", "file:aws/credentials", "grpc:aws"}
        found |= {"container:aws", "imds:aws"} if metadata else set()
    if "gcp" in targets:
        found |= {"file:gcp/gcp.json", "file:gcp/gcp.token", "grpc:gcp"}
        found |= {"gce:gcp"} if metadata else set()
    return found


def assert_backoff(delays: Sequence[float], cap: float = 300.0) -> None:
    """Jittered doubling from 1 s (each wait 75-100 % of its step), capped at `cap`."""
    for i, delay in enumerate(delays):
        step = min(cap, 2.0 ** i)
        assert 0.75 * step - 1e-6 <= delay <= step + 1e-6, (i, list(delays))


def digest(secret: str) -> str:
    """A short, safe name for a secret in assertion messages (never the value)."""
    return hashlib.sha256(secret.encode()).hexdigest()[:12]


# -- what the emulators really issued ----------------------------------------------------


class Issued:
    """The emulators' records: a served key or token -> its real expiry and material.

    An emulator's expiries are on its own clock; what its answers say of that clock
    (`Date`, `answer_time`) against the judging clock turns them into the judge's terms
    (an STS 5 minutes behind issues an hour that really ends 5 minutes later)."""

    def __init__(self, aws: Iterable[AwsStsEmulator] = (),
                 gcp: Iterable[GcpEmulator] = (),
                 now: Callable[[], float] = time.time) -> None:
        self._aws = list(aws)
        self._gcp = list(gcp)
        self._now = now
        self._keys: dict[str, tuple[IssuedCredentials, AwsStsEmulator]] = {}

    def aws(self, access_key_id: str) -> IssuedCredentials | None:
        found = self._find_aws(access_key_id)
        return found[0] if found else None

    def aws_expiry(self, access_key_id: str) -> float | None:
        issued = self.aws(access_key_id)
        if issued is None:
            return None
        found = self._keys.get(access_key_id)
        offset = found[1].answer_time() - self._now() if found else 0.0
        return issued.expiration.timestamp() - offset

    def _find_aws(self, access_key_id: str) -> tuple[IssuedCredentials, AwsStsEmulator] | None:
        found = self._keys.get(access_key_id)
        if found is None:
            for sts in self._aws:
                for issued in sts.issued:
                    self._keys.setdefault(issued.access_key_id, (issued, sts))
            found = self._keys.get(access_key_id)
        return found

    def gcp_expiry(self, token: str) -> float | None:
        for emulator in self._gcp:
            issued = emulator.whoami(token)
            if issued is not None:
                return issued.expires_at - (emulator.answer_time() - self._now())
        return None


# -- judging time --------------------------------------------------------------------------


class RealTime:
    """The judge for scenarios on the real clock."""

    def now(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        """The daemon's monotonic clock (its credentials' deadlines are on it)."""
        return time.monotonic()

    def seconds_since(self, expiry: float, read_at: float, read_mono: float) -> float:
        """Real seconds between the judging clock passing `expiry` and the read."""
        return read_at - expiry


class SteppingClock(FakeClock):
    """A FakeClock that knows which tasks are parked in `sleep()` and until when."""

    def __init__(self, start: float) -> None:
        super().__init__(start)
        self.parked: dict[int, tuple[str, float]] = {}  # id(task) -> (name, wake)

    async def sleep(self, seconds: float) -> None:
        task = asyncio.current_task()
        key = id(task)
        self.parked[key] = (task.get_name() if task else "?", self.monotonic() + max(0.0,
                                                                                    seconds))
        try:
            await super().sleep(seconds)
        finally:
            self.parked.pop(key, None)


class VirtualTime:
    """Drives a SteppingClock shared by the daemon and the emulators (see module doc)."""

    def __init__(self, start: float | None = None) -> None:
        self.clock = SteppingClock(time.time() if start is None else start)
        self.history: list[tuple[float, float]] = []  # (real monotonic, fake wall) per step
        self._bridge: RunningBridge | None = None
        self._tasks: frozenset[str] = frozenset()

    def now(self) -> float:
        return self.clock.time()

    def monotonic(self) -> float:
        return self.clock.monotonic()

    def seconds_since(self, expiry: float, read_at: float, read_mono: float) -> float:
        for real_mono, wall in list(self.history):
            if wall >= expiry:
                return read_mono - real_mono
        return 0.0  # the clock is passing `expiry` right now

    def attach(self, bridge: RunningBridge, tasks: Iterable[str]) -> None:
        """`tasks`: the scheduler tasks that must be parked between steps."""
        self._bridge = bridge
        self._tasks = frozenset(tasks)

    def parked(self) -> dict[str, float]:
        """Task name -> fake monotonic wake time, read on the daemon's loop."""
        async def read() -> dict[str, float]:
            return dict(self.clock.parked.values())
        parked: dict[str, float] = self._call(read())
        return parked

    def settle(self, timeout: float = 15.0) -> dict[str, float]:
        """Wait (real time, bounded) until every scheduler task is parked again."""
        deadline = time.monotonic() + timeout
        while True:
            parked = self.parked()
            if self._tasks <= parked.keys():
                return parked
            if time.monotonic() > deadline:
                raise AssertionError(f"tasks {sorted(self._tasks - parked.keys())} never parked "
                                     f"again within {timeout}s (a refresh hung?)")
            time.sleep(0.005)

    def advance(self, seconds: float, *, settle: bool = True) -> None:
        """Move fake time `seconds` ahead, one wake-up at a time, letting each settle
        (`settle=False`: do not wait for the last one)."""
        assert seconds >= 0
        target = self.clock.monotonic() + seconds
        while True:
            parked = self.settle()
            due = [wake for wake in parked.values() if wake <= target]
            step_to = min(due) if due else target
            self._step(step_to - self.clock.monotonic())
            if step_to >= target:
                break
        if settle:
            self.settle()

    def advance_to_wake(self, task: str, *, limit: float = 86_400.0,
                        settle: bool = True) -> float:
        """Advance to `task`'s next wake-up (and let it run); return the fake seconds."""
        parked = self.settle()
        assert task in parked, f"{task} is not parked: {sorted(parked)}"
        delay = max(0.0, parked[task] - self.clock.monotonic())
        assert delay <= limit, f"{task} sleeps {delay:.0f}s, more than {limit:.0f}s"
        self.advance(delay, settle=settle)
        return delay

    def _step(self, seconds: float) -> None:
        self._call(self.clock.advance(max(0.0, seconds)))
        self.history.append((time.monotonic(), self.clock.time()))

    def _call(self, coro: Any) -> Any:
        assert self._bridge is not None, "attach() a bridge first"
        return self._bridge.call(coro)


Judge = RealTime | VirtualTime


class HostOffsets(Protocol):
    """A daemon whose wall clock is shifted (tests.support.faketime.HostClock)."""

    def offsets(self, at: float) -> tuple[float, float]: ...


# -- reading what is served ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Read:
    """One read of one output: `served` with the credential's digest and effective expiry,
    or what was there instead (`absent`, a gRPC code, an HTTP status, `down`)."""

    channel: str
    outcome: str
    credential: str | None = None
    expires_at: float | None = None

    @property
    def served(self) -> bool:
        return self.outcome == "served"


@dataclass
class Sweep:
    """One pass over every output, channel -> read."""

    reads: dict[str, Read] = field(default_factory=dict)

    def outcome(self, channel: str) -> str:
        return self.reads[channel].outcome

    def served(self) -> set[str]:
        return {c for c, r in self.reads.items() if r.served}

    def channels(self, prefix: str = "") -> set[str]:
        return {c for c in self.reads if c.startswith(prefix)}


@dataclass(frozen=True, slots=True)
class _Endpoints:
    container: tuple[int, Path, tuple[str, ...]] | None
    imds: tuple[int, str] | None
    gce: tuple[int, str] | None


class ExpiryChecker:
    """Reads every served output continuously; records expired, unknown and torn reads."""

    def __init__(self, config: Config, issued: Issued, *, judge: Judge | None = None,
                 services: Callable[[], Sequence[object]] = tuple,
                 period: float = CHECK_PERIOD, limit: float = CHECK_LIMIT,
                 host: HostOffsets | None = None) -> None:
        """`host`: the daemon's wall clock is shifted (libfaketime); absolute expiries it
        serves are in its terms, and `host.offsets(t)` says which offsets it may have had."""
        self.config = config
        self.issued = issued
        self.judge: Judge = judge or RealTime()
        self._host = host
        self._services = services
        self._period = period
        self._limit = limit
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._client = BridgeClient(config.grpc.socket, timeout=READ_TIMEOUT)
        self._container_token: str | None = None
        self.violations: list[str] = []
        self.late_file_lags: list[float] = []
        self.reads = 0
        self.served = 0
        self.sweeps = 0
        self.served_by_channel: dict[str, int] = {}
        self.errors: list[str] = []  # unexpected read failures (not violations)
        self.expect_served = True
        outdir = config.outputs.directory
        self._aws = [t.name for t in config.targets if t.final.cloud == "aws"]
        self._gcp = [t.name for t in config.targets if t.final.cloud == "gcp"]
        self._jwt = [t.name for t in config.targets if t.jwt_file]
        self._dir = Path(outdir)

    # -- lifecycle --

    def start(self) -> ExpiryChecker:
        self._thread = threading.Thread(target=self._run, name="expiry-checker", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
            assert not self._thread.is_alive(), "the checker thread did not stop"
            self._thread = None
        self._client.close()

    def _run(self) -> None:
        deadline = time.monotonic() + self._limit
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                self.sweep()
            except Exception as exc:  # a checker bug must show, not kill the thread silently
                self.errors.append(f"sweep failed: {type(exc).__name__}: {exc}")
            self._stop.wait(self._period)

    def summary(self) -> str:
        lag = max(self.late_file_lags, default=0.0)
        return (f"{self.sweeps} sweeps, {self.reads} reads, {self.served} served "
                f"({', '.join(f'{k} {v}' for k, v in sorted(self.served_by_channel.items()))}); "
                f"{len(self.late_file_lags)} file reads after expiry (max lag {lag * 1000:.0f} "
                f"ms, grace {FILE_GRACE * 1000:.0f} ms); {len(self.violations)} violations")

    def assert_clean(self) -> None:
        assert not self.violations, ("served expired, unknown or torn credentials:\n"
                                     + "\n".join(self.violations[:20]) + "\n" + self.summary())
        assert not self.errors, "checker errors:\n" + "\n".join(self.errors[:10])
        assert self.reads > 0, "the checker made no reads: it proved nothing"
        if self.expect_served:
            assert self.served > 0, "the checker never saw a credential: " + self.summary()

    def wait_served(self, channel: str, timeout: float = 5.0) -> Sweep:
        """Sweep until `channel` serves a credential (bounded); return that sweep."""
        deadline = time.monotonic() + timeout
        while not (sweep := self.sweep()).reads[channel].served:
            if time.monotonic() > deadline:
                raise AssertionError(f"{channel} served nothing within {timeout}s: "
                                     f"{sweep.outcome(channel)}")
            time.sleep(0.01)
        return sweep

    # -- one pass --

    def sweep(self) -> Sweep:
        """Read every output once (thread-safe; tests call it to look at one moment)."""
        with self._lock:
            out = Sweep()
            for name in self._aws:
                self._read_file(out, f"aws/{name}.json", self._aws_json)
            if self._aws:
                self._read_file(out, "aws/credentials", self._aws_ini)
            for name in self._gcp:
                self._read_file(out, f"gcp/{name}.json", self._gcp_json)
                self._read_file(out, f"gcp/{name}.token", self._gcp_token)
            for name in self._jwt:
                self._read_file(out, f"jwt/{name}.jwt", self._jwt_file)
            for t in self.config.targets:
                self._read_grpc(out, t.name)
            self._read_metadata(out)
            self.sweeps += 1
            for read in out.reads.values():
                self.reads += 1
                if read.served:
                    self.served += 1
                    kind = read.channel.split(":", 1)[0]
                    self.served_by_channel[kind] = self.served_by_channel.get(kind, 0) + 1
            return out

    # -- files --

    def _read_file(self, out: Sweep, rel: str,
                   parse: Callable[[str, bytes, float, float], Read]) -> None:
        channel = f"file:{rel}"
        t0, m0 = self.judge.now(), time.monotonic()
        try:
            data = (self._dir / rel).read_bytes()
        except FileNotFoundError:
            out.reads[channel] = Read(channel, "absent")
            return
        except OSError as exc:
            self.violations.append(f"{channel}: unreadable ({exc.strerror})")
            out.reads[channel] = Read(channel, "unreadable")
            return
        try:
            out.reads[channel] = parse(channel, data, t0, m0)
        except (ValueError, KeyError, TypeError) as exc:
            self.violations.append(f"{channel}: torn or unparseable ({type(exc).__name__}: "
                                   f"{str(exc)[:80]}), {len(data)} bytes")
            out.reads[channel] = Read(channel, "torn")

    def _aws_json(self, channel: str, data: bytes, t0: float, m0: float) -> Read:
        doc = json.loads(data)
        if not isinstance(doc, dict) or doc.get("Version") != 1:
            raise ValueError("not a credential_process document")
        return self._judge_aws(channel, str(doc["AccessKeyId"]), str(doc["SecretAccessKey"]),
                               str(doc["SessionToken"]), parse_utc_iso(doc["Expiration"]),
                               t0, m0, is_file=True)

    def _aws_ini(self, channel: str, data: bytes, t0: float, m0: float) -> Read:
        text = data.decode()
        if not text.endswith("\n"):
            raise ValueError("no final newline (cut off?)")
        profiles: dict[str, dict[str, str]] = {}
        current: dict[str, str] | None = None
        for line in text.splitlines():
            if not line or (current is None and line.startswith("# Written by")):
                continue
            if line.startswith("[") and line.endswith("]"):
                current = profiles.setdefault(line[1:-1], {})
            elif current is not None and line.startswith("# expires "):
                current["expires"] = line[len("# expires "):]
            elif current is not None and " = " in line:
                key, _, value = line.partition(" = ")
                current[key] = value
            else:
                raise ValueError(f"unexpected line of {len(line)} characters")
        if not profiles:  # every profile expired: the file is kept, empty of credentials
            return Read(channel, "empty")
        reads = []
        for name, p in sorted(profiles.items()):
            if name not in self._aws:
                raise ValueError(f"profile {name!r} is not an AWS target")
            reads.append(self._judge_aws(
                f"{channel}[{name}]", p["aws_access_key_id"], p["aws_secret_access_key"],
                p["aws_session_token"], parse_utc_iso(p["expires"]), t0, m0, is_file=True))
        first = min(reads, key=lambda r: r.expires_at or 0.0)
        return Read(channel, first.outcome, first.credential, first.expires_at)

    def _gcp_json(self, channel: str, data: bytes, t0: float, m0: float) -> Read:
        doc = json.loads(data)
        if not isinstance(doc, dict) or doc.get("token_type") != "Bearer":
            raise ValueError("not a token document")
        return self._judge_gcp(channel, str(doc["token"]), parse_utc_iso(doc["expiry"]),
                               t0, m0, is_file=True)

    def _gcp_token(self, channel: str, data: bytes, t0: float, m0: float) -> Read:
        token = data.decode()
        if not token or token != token.strip():
            raise ValueError("empty, or surrounded by whitespace")
        return self._judge_gcp(channel, token, None, t0, m0, is_file=True)

    def _jwt_file(self, channel: str, data: bytes, t0: float, m0: float) -> Read:
        """The opt-in JWT-SVID file, judged by its own `exp` (the agent's issuer runs on
        the real clock here)."""
        claims = jwt.decode(data.decode(), options={"verify_signature": False})
        exp = claims["exp"]
        if not isinstance(exp, int):
            raise TypeError("exp is not an integer")
        return self._verdict(channel, digest(data.decode()), float(exp), None, t0, m0,
                             is_file=True)

    # -- gRPC --

    def _read_grpc(self, out: Sweep, target: str) -> None:
        channel = f"grpc:{target}"
        t0, m0 = self.judge.now(), time.monotonic()
        try:
            served = self._client.get_credential(target)
        except ApiError as exc:
            if exc.code == "UNAVAILABLE" and "failed to connect" in exc.detail:
                # Nothing listens (yet, or any more). A fresh channel next time: gRPC's
                # reconnect backoff would otherwise answer UNAVAILABLE for seconds after.
                self._client.close()
                self._client = BridgeClient(self.config.grpc.socket, timeout=READ_TIMEOUT)
                out.reads[channel] = Read(channel, "down")
            else:
                out.reads[channel] = Read(channel, exc.code)
            return
        if isinstance(served.material, AwsCredentials):
            aws = served.material
            read = self._judge_aws(channel, aws.access_key_id,
                                   aws.secret_access_key, aws.session_token,
                                   served.expires_at, t0, m0, is_file=False)
        elif isinstance(served.material, GcpToken):
            read = self._judge_gcp(channel, served.material.access_token, served.expires_at, t0, m0,
                                   is_file=False)
        else:
            out.reads[channel] = Read(channel, "no_material")
            return
        if served.state is State.EXPIRED:
            self.violations.append(f"{channel}: material served with state expired")
        out.reads[channel] = read

    # -- metadata --

    def _endpoints(self) -> _Endpoints:
        container = imds = gce = None
        targets = self.config.targets
        for s in self._services():
            kind, port = getattr(s, "endpoint", None), getattr(s, "port", 0)
            if not getattr(s, "serving", False):
                continue
            if kind == "container":
                names = tuple(t.name for t in targets if "container" in t.serve)
                container = (port, Path(s.token_file), names)  # type: ignore[attr-defined]
            elif kind == "imds":
                imds = (port, next(t.name for t in targets if "imds" in t.serve))
            elif kind == "gce":
                gce = (port, next(t.name for t in targets if "gce" in t.serve))
        return _Endpoints(container, imds, gce)

    def _read_metadata(self, out: Sweep) -> None:
        ends = self._endpoints()
        if ends.container is not None:
            port, token_file, names = ends.container
            if self._container_token is None:
                with contextlib.suppress(OSError):
                    self._container_token = token_file.read_text()
            for name in names if self._container_token is not None else ():
                self._read_http(out, f"container:{name}", port, "GET",
                                f"/v1/credentials/{name}",
                                {"Authorization": str(self._container_token)}, "aws")
        if ends.imds is not None:
            port, name = ends.imds
            status, body = _http(port, "PUT", "/latest/api/token",
                                 {"X-aws-ec2-metadata-token-ttl-seconds": "21600"})
            if status == 200:
                self._read_http(out, f"imds:{name}", port, "GET",
                                f"/latest/meta-data/iam/security-credentials/{name}",
                                {"X-aws-ec2-metadata-token": body.decode()}, "aws")
            else:
                out.reads[f"imds:{name}"] = Read(f"imds:{name}", f"token {status}")
        if ends.gce is not None:
            port, name = ends.gce
            self._read_http(out, f"gce:{name}", port, "GET",
                            "/computeMetadata/v1/instance/service-accounts/default/token",
                            {"Metadata-Flavor": "Google"}, "gce")

    def _read_http(self, out: Sweep, channel: str, port: int, method: str, path: str,
                   headers: Mapping[str, str], kind: str) -> None:
        t0, m0 = self.judge.now(), time.monotonic()
        status, body = _http(port, method, path, headers)
        if status != 200:
            if AWS_KEY.search(body.decode("latin-1")) or b"ya29." in body:
                self.violations.append(f"{channel}: credential material in a {status} reply")
            out.reads[channel] = Read(channel, str(status) if status else "down")
            return
        try:
            doc = json.loads(body)
            if kind == "aws":
                read = self._judge_aws(channel, str(doc["AccessKeyId"]),
                                       str(doc["SecretAccessKey"]), str(doc["Token"]),
                                       parse_utc_iso(doc["Expiration"]), t0, m0, is_file=False)
            else:
                read = self._judge_gcp(channel, str(doc["access_token"]),
                                       t0 + int(doc["expires_in"]), t0, m0, is_file=False,
                                       relative=True)
        except (ValueError, KeyError, TypeError) as exc:
            self.violations.append(f"{channel}: unparseable 200 reply ({type(exc).__name__})")
            read = Read(channel, "torn")
        out.reads[channel] = read

    # -- the verdicts --

    def _judge_aws(self, channel: str, key_id: str, secret: str, token: str,
                   served_expiry: float | None, t0: float, m0: float, *,
                   is_file: bool) -> Read:
        issued = self.issued.aws(key_id)
        name = digest(key_id)
        if issued is None:
            self.violations.append(f"{channel}: access key {name} was never issued by an STS")
            return Read(channel, "unknown", name)
        if issued.secret_access_key != secret or issued.session_token != token:
            self.violations.append(f"{channel}: key {name} served with another secret or "
                                   "session token (torn or mixed)")
        real = self.issued.aws_expiry(key_id)
        assert real is not None
        return self._verdict(channel, name, real, served_expiry, t0, m0, is_file=is_file)

    def _judge_gcp(self, channel: str, token: str, served_expiry: float | None, t0: float,
                   m0: float, *, is_file: bool, relative: bool = False) -> Read:
        name = digest(token)
        real = self.issued.gcp_expiry(token)
        if real is None:
            self.violations.append(f"{channel}: token {name} was never issued by Google")
            return Read(channel, "unknown", name)
        return self._verdict(channel, name, real, served_expiry, t0, m0, is_file=is_file,
                             relative=relative)

    def _verdict(self, channel: str, name: str, real: float, served: float | None, t0: float,
                 m0: float, *, is_file: bool, relative: bool = False) -> Read:
        """`served`: the expiry as served, in the daemon's wall-clock terms unless
        `relative` (an `expires_in` taken at `t0`)."""
        lo, hi = self._host.offsets(t0) if self._host and not relative else (0.0, 0.0)
        if served is not None and served - hi > real + 1.0:
            late = served - hi - real
            self.violations.append(f"{channel}: {name} served as expiring {late:.0f}s after "
                                   "its real expiry (in this host's terms)")
        if served is not None:
            served -= lo  # in real terms, the latest it can mean
        expiry = real if served is None else min(real, served)
        if expiry <= t0:
            if is_file:
                lag = self.judge.seconds_since(expiry, t0, m0)
                self.late_file_lags.append(lag)
                if lag > FILE_GRACE:
                    self.violations.append(f"{channel}: {name} still in the file {lag:.2f}s "
                                           f"(real time) after it expired")
            else:
                self.violations.append(f"{channel}: {name} served {t0 - expiry:.3f}s after "
                                       "it expired")
        return Read(channel, "served", name, expiry)


def _http(port: int, method: str, path: str, headers: Mapping[str, str]) -> tuple[int, bytes]:
    """One request on a fresh connection; (0, b"") when nothing listens."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=READ_TIMEOUT)
    try:
        connection.request(method, path, headers=dict(headers))
        response = connection.getresponse()
        return response.status, response.read()
    except (OSError, http.client.HTTPException):  # not listening, or cut off by a stop
        return 0, b""
    finally:
        connection.close()


# -- the world a scenario runs in ------------------------------------------------------------


@dataclass
class Scenario:
    stack: DevStack
    bridge: RunningBridge
    checker: ExpiryChecker
    config_path: Path
    time: VirtualTime | None = None

    @property
    def config(self) -> Config:
        return self.bridge.config

    @property
    def outdir(self) -> Path:
        return Path(self.config.outputs.directory)

    @property
    def vt(self) -> VirtualTime:
        assert self.time is not None, "this scenario runs on the real clock"
        return self.time

    def now(self) -> float:
        return self.checker.judge.now()

    def mono(self) -> float:
        """The daemon's monotonic clock: what its deadlines and validity are judged on."""
        return self.checker.judge.monotonic()

    def status(self, target: str) -> Any:
        status = self.bridge.daemon.store.get(target)
        assert status is not None
        return status

    def metric(self, name: str, **labels: str) -> float:
        value = self.bridge.daemon.metrics.sample(name, **labels)
        return 0.0 if value is None else value

    def failures(self, target: str, reason: str) -> float:
        """spiffe_bridge_refresh_failures_total for `target` and `reason`, any stage."""
        return sum(value for labels, value in
                   self.bridge.daemon.metrics.refresh_failures.samples()
                   if labels["target"] == target and labels["reason"] == reason)

    def state(self, target: str) -> str:
        """The state the metrics export (exactly one of fresh/stale/expired is 1)."""
        on = [s.value for s in State
              if self.metric("spiffe_bridge_credential_state", target=target, state=s.value)]
        assert len(on) == 1, f"credential_state of {target}: {on}"
        return on[0]

    def expected_files(self) -> dict[str, str | None]:
        """File channel -> the digest the store says it must carry now (None: no file,
        or for aws/credentials no profile)."""
        now = self.mono()
        store = self.bridge.daemon.store
        valid = {t.name: (s.valid_credential(now) if (s := store.get(t.name)) else None)
                 for t in self.config.targets}
        expected: dict[str, str | None] = {}
        profiles = []
        for t in sorted(self.config.targets, key=lambda t: t.name):
            c = valid[t.name]
            if t.final.cloud == "aws":
                key = digest(c.material.access_key_id) if c and isinstance(
                    c.material, AwsCredentials) else None
                expected[f"file:aws/{t.name}.json"] = key
                if c is not None:
                    profiles.append((c.expires_at, key))
            else:
                token = digest(c.material.access_token) if c and isinstance(
                    c.material, GcpToken) else None
                expected[f"file:gcp/{t.name}.json"] = expected[f"file:gcp/{t.name}.token"] = token
        if any(t.final.cloud == "aws" for t in self.config.targets):
            expected["file:aws/credentials"] = min(profiles, key=lambda p: p[0])[1] if (
                profiles) else None
        return expected

    def sweep(self, timeout: float = 5.0) -> Sweep:
        """A checker sweep once the files have caught up with the store (the writer
        runs a few milliseconds after each change); fails if they do not in `timeout`."""
        deadline = time.monotonic() + timeout
        while True:
            expected = self.expected_files()
            sweep = self.checker.sweep()
            behind = {c: (sweep.reads[c].credential, want) for c, want in expected.items()
                      if (sweep.reads[c].credential if sweep.reads[c].served else None) != want}
            if not behind:
                return sweep
            if time.monotonic() > deadline:
                raise AssertionError(f"the files did not catch up with the store in "
                                     f"{timeout}s: (served, expected) {behind}")
            time.sleep(0.01)

    def wait_for(self, check: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
        wait_for(check, what, timeout=timeout, interval=0.01)


def target_doc(kind: str, stack: DevStack, *, name: str | None = None, metadata: bool = False,
               **extra: Any) -> dict[str, Any]:
    """An AWS (demo role) or GCP (demo service account) target against the stack."""
    if kind == "aws":
        doc: dict[str, Any] = {"name": name or "aws", "aws": {
            "role_arn": DEMO_ROLE_ARN, "region": "us-east-1", "sts_endpoint": stack.aws_sts_url}}
        if metadata:
            doc["serve"] = ["container", "imds"]
    else:
        doc = {"name": name or "gcp", "gcp": {
            "workload_identity_provider": GCP_PROVIDER, "service_account": DEMO_SERVICE_ACCOUNT,
            "sts_endpoint": stack.gcp_sts_url, "iam_credentials_endpoint": stack.gcp_iam_url}}
        if metadata:
            doc["serve"] = ["gce"]
    doc.update(extra)
    return doc


def write_config(path: Path, stack: DevStack, outdir: Path, targets: list[dict[str, Any]], *,
                 metadata: bool = False, timeout: str = "5s") -> Path:
    doc: dict[str, Any] = {
        "workload_api": {"socket": stack.workload_socket_uri, "timeout": timeout},
        "outputs": {"directory": str(outdir)},
        "http": {"address": "127.0.0.1:0"},
        "grpc": {"socket": f"unix://{path.parent}/bridge.sock"},
        "targets": targets,
    }
    if metadata:
        serves = {k for t in targets for k in t.get("serve", ())}
        doc["metadata"] = {k: {"address": "127.0.0.1:0", "allowed_uids": [os.getuid()]}
                           for k in sorted(serves)}
    path.write_text(yaml.safe_dump(doc))
    return path


def mint_on(stack: DevStack, clock: Callable[[], float], ttl: int = 300) -> None:
    """Make the fake agent mint SVIDs on `clock` (iat = its now), like an agent whose
    clock is the scenario's."""
    def mint(spiffe_id: str, audience: tuple[str, ...]) -> str:
        return stack.authority.mint(spiffe_id, list(audience), ttl, iat=int(clock()))
    stack.workload.faults.replace_svids(mint)


# -- process-level helpers ---------------------------------------------------------------


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@contextlib.contextmanager
def inotify(directories: Sequence[Path]) -> Iterator[Callable[[float], list[str]]]:
    """Watch `directories` for created and renamed-in entries; yields `events(timeout)`
    returning the names seen (`dir/name`), [] when nothing happened within `timeout`."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
    if fd < 0:
        raise OSError(ctypes.get_errno(), "inotify_init1")
    in_create, in_moved_to = 0x100, 0x80
    watches: dict[int, str] = {}
    try:
        for d in directories:
            wd = libc.inotify_add_watch(fd, os.fsencode(d), in_create | in_moved_to)
            if wd < 0:
                raise OSError(ctypes.get_errno(), f"inotify_add_watch {d}")
            watches[wd] = d.name

        def events(timeout: float) -> list[str]:
            ready, _, _ = select.select([fd], [], [], timeout)
            if not ready:
                return []
            data = os.read(fd, 65536)
            names, offset = [], 0
            while offset < len(data):
                wd, _mask, _cookie, length = struct.unpack_from("iIII", data, offset)
                raw = data[offset + 16: offset + 16 + length].split(b"\0", 1)[0]
                names.append(f"{watches.get(wd, '?')}/{raw.decode()}")
                offset += 16 + length
            return names

        yield events
    finally:
        os.close(fd)


def temp_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if atomic.TEMP_MARK in p.name)


StartChecker = Callable[..., ExpiryChecker]  # the `expiry_checker` fixture
MakeScenario = Callable[..., Scenario]       # the `scenario` fixture
