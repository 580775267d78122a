"""Kill -9 harness shared by the crash-safety tests and `tests/bench/crash_loop.py`.

Two things get killed, both running our real write path:

- **The daemon**: `python -m bridge run --config ...` as its own process, against a dev
  stack in the calling process whose AWS and GCP emulators run clocks that lag real
  time (by 900 s - AWS_LIFETIME and 600 s - GCP_LIFETIME). The shortest sessions the
  config allows (15 min AWS, 10 min GCP) therefore expire a few real seconds after issue,
  so the daemon refreshes every target every ~2 s (a quarter of the lifetime) and
  rewrites its JWT files every second: files are rewritten continuously while it is
  SIGKILLed. SVIDs are back-dated (iat 10 min ago) so Google's `iat` check passes
  under its lagging clock; every token handed out is recorded, as the emulators record
  every credential they issue, so each file read back must equal one complete value.
- **A forked writer**: an `os.fork()` child of the caller that runs the real
  `CredentialDirectory.prepare()` (the start-up sweep) and then `apply()` in a tight
  loop, every pass a new, self-checking version of every credential, killed at a
  random microsecond offset. Fork costs milliseconds, so these give the bulk of the
  kills; the child writes through our code, nothing is reimplemented.

After every kill every output file must parse and be one complete version (old or new,
never torn), and the temp files the kill left must be gone once the next start's sweep
has run.
"""

from __future__ import annotations

import configparser
import contextlib
import hashlib
import json
import os
import random
import select
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bridge.app.daemon import credential_directory
from bridge.clouds.aws import AwsCredentials
from bridge.clouds.gcp import GcpToken
from bridge.config import OutputsConfig, TargetConfig, parse_config
from bridge.devstack import DEMO_ROLE_ARN, DEMO_SERVICE_ACCOUNT, GCP_PROVIDER, DevStack
from bridge.devstack.aws import AwsStsEmulator
from bridge.devstack.gcp import GcpEmulator
from bridge.model import (
    Credential,
    JwtSvid,
    State,
    TargetStatus,
    parse_utc_iso,
)
from bridge.outputs import atomic
from tests.support.process import start_bridge

AWS_LIFETIME = 8.0  # real seconds an AWS session from the lagging STS lives
GCP_LIFETIME = 8.0  # real seconds a GCP access token from the lagging IAM lives
SVID_BACKDATE = 600  # iat this far back, so GCP's lagging clock sees no future iat
SVID_LEFT = 120  # real seconds each SVID has left (over the source's 30 s margin)
RUNNING_LINE = "spiffe-bridge running"  # logged once prepare() (sweep, recover) is done

AWS_TARGETS = ("a1", "a2", "a3")
GCP_TARGETS = ("g1", "g2")
JWT_TARGETS = ("a1", "g1")
EXTERNAL_TARGETS = ("g1",)
EXPECTED_FILES = frozenset({
    "aws/credentials", *(f"aws/{t}.json" for t in AWS_TARGETS),
    *(f"gcp/{t}.{ext}" for t in GCP_TARGETS for ext in ("token", "json")),
    *(f"gcp/{t}.external_account.json" for t in EXTERNAL_TARGETS),
    *(f"jwt/{t}.jwt" for t in JWT_TARGETS)})


def temp_files(directory: Path) -> list[Path]:
    """Every temp file under `directory` (atomic.write_file's `.<name>.tmp.<hex>`)."""
    if not directory.exists():
        return []
    return sorted(p for p in directory.rglob("*") if atomic.TEMP_MARK in p.name)


# -- the daemon's world --------------------------------------------------------------


class ShortLivedStack:
    """A DevStack whose clouds issue credentials that live a few real seconds."""

    def __init__(self, workdir: Path) -> None:
        self.stack = DevStack(workdir)
        # The emulators take a clock "so a test can play clock skew": lagging clocks make
        # the minimum session lengths expire within seconds of real time.
        self.stack.aws = AwsStsEmulator(clock=lambda: time.time() - (900 - AWS_LIFETIME),
                                        date_clock=time.time)
        self.stack.gcp = GcpEmulator(clock=lambda: time.time() - (600 - GCP_LIFETIME),
                                     date_clock=time.time)
        self._lock = threading.Lock()
        self._minted: set[str] = set()

    def start(self) -> ShortLivedStack:
        self.stack.start()
        self.stack.workload.faults.replace_svids(self._mint)
        return self

    def stop(self) -> None:
        self.stack.stop()

    def _mint(self, spiffe_id: str, audience: tuple[str, ...]) -> str:
        now = int(time.time())
        token = self.stack.authority.mint(spiffe_id, list(audience),
                                          SVID_BACKDATE + SVID_LEFT, iat=now - SVID_BACKDATE)
        with self._lock:
            self._minted.add(token)
        return token

    def minted(self) -> frozenset[str]:
        with self._lock:
            return frozenset(self._minted)

    def issued(self) -> Issued:
        aws = {c.access_key_id: (c.secret_access_key, c.session_token)
               for c in self.stack.aws.issued}
        gcp = {t.token for t in self.stack.gcp.issued}
        return Issued(aws=aws, gcp=gcp, jwt=self.minted())

    def write_config(self, path: Path, outdir: Path) -> Path:
        s = self.stack
        aws = {"role_arn": DEMO_ROLE_ARN, "region": "us-east-1", "sts_endpoint": s.aws_sts_url,
               "duration": "15m"}
        gcp = {"workload_identity_provider": GCP_PROVIDER,
               "service_account": DEMO_SERVICE_ACCOUNT, "lifetime": "10m",
               "sts_endpoint": s.gcp_sts_url, "iam_credentials_endpoint": s.gcp_iam_url}
        targets: list[dict[str, Any]] = [
            {"name": n, "aws": aws, "jwt_file": n in JWT_TARGETS} for n in AWS_TARGETS]
        targets += [{"name": n, "gcp": {**gcp, "external_account_file": n in EXTERNAL_TARGETS},
                     "jwt_file": n in JWT_TARGETS} for n in GCP_TARGETS]
        doc = {
            "workload_api": {"socket": s.workload_socket_uri, "timeout": "5s"},
            "outputs": {"directory": str(outdir)},
            "http": {"address": f"127.0.0.1:{_free_port()}"},
            "grpc": {"socket": f"unix://{path.parent}/bridge.sock"},
            "refresh": {"concurrency": 8},
            "targets": targets,
        }
        path.write_text(yaml.safe_dump(doc))
        return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class Issued:
    """Every complete value a file may legitimately hold."""

    aws: dict[str, tuple[str, str]]  # access key id -> (secret, session token)
    gcp: set[str]                    # access tokens
    jwt: frozenset[str]              # JWT-SVIDs handed out


def check_daemon_outputs(outdir: Path, issued: Issued) -> list[str]:
    """Problems with the files the daemon left: each must parse and be one issued value."""
    problems: list[str] = []

    def aws_ok(where: str, key: str, secret: str, token: str) -> None:
        if issued.aws.get(key) != (secret, token):
            problems.append(f"{where}: key/secret/token are not one issued credential")

    for path in _output_files(outdir, problems):
        rel = path.relative_to(outdir).as_posix()
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            problems.append(f"{rel}: unreadable: {exc}")
            continue
        if path.stat().st_mode & 0o777 != 0o600:
            problems.append(f"{rel}: mode {path.stat().st_mode & 0o777:o}")
        try:
            if rel == "aws/credentials":
                ini = configparser.ConfigParser(interpolation=None)
                ini.read_string(text)
                if not set(ini.sections()) <= set(AWS_TARGETS):
                    problems.append(f"{rel}: unexpected sections {ini.sections()}")
                for name in ini.sections():
                    sec = ini[name]
                    aws_ok(f"{rel}[{name}]", sec["aws_access_key_id"],
                           sec["aws_secret_access_key"], sec["aws_session_token"])
            elif rel.startswith("aws/") and rel.endswith(".json"):
                doc = json.loads(text)
                if doc["Version"] != 1:
                    problems.append(f"{rel}: Version {doc['Version']!r}")
                parse_utc_iso(doc["Expiration"])
                aws_ok(rel, doc["AccessKeyId"], doc["SecretAccessKey"], doc["SessionToken"])
            elif rel.endswith(".external_account.json"):
                doc = json.loads(text)
                if doc["type"] != "external_account" or "file" not in doc["credential_source"]:
                    problems.append(f"{rel}: not an external_account config")
            elif rel.startswith("gcp/") and rel.endswith(".token"):
                if text not in issued.gcp:
                    problems.append(f"{rel}: not an issued access token")
            elif rel.startswith("gcp/") and rel.endswith(".json"):
                doc = json.loads(text)
                parse_utc_iso(doc["expiry"])
                if doc["token"] not in issued.gcp or doc["token_type"] != "Bearer" or (
                        not doc["principal"]):
                    problems.append(f"{rel}: not an issued token document")
            elif rel.startswith("jwt/") and rel.endswith(".jwt"):
                if text not in issued.jwt:
                    problems.append(f"{rel}: not a JWT-SVID the agent handed out")
            else:
                problems.append(f"{rel}: unexpected file")
        except (ValueError, KeyError, TypeError, configparser.Error) as exc:
            problems.append(f"{rel}: does not parse: {type(exc).__name__}: {exc}")
    return problems


def _output_files(outdir: Path, problems: list[str]) -> Iterator[Path]:
    if not outdir.exists():
        return
    for path in sorted(outdir.rglob("*")):
        if atomic.TEMP_MARK in path.name or path.is_dir():
            continue
        if not path.is_file() or path.is_symlink():
            problems.append(f"{path}: not a regular file")
            continue
        yield path


@dataclass
class KillStats:
    kills: int = 0
    torn: list[str] = field(default_factory=list)  # parse/consistency problems found
    leaked: list[str] = field(default_factory=list)  # temp files alive after a sweep
    temps_left_by_kills: int = 0  # temp files found right after kills (mid-write kills)
    kills_mid_write: int = 0      # kills that left at least one temp file behind
    swept_checks: int = 0         # restarts whose sweep was verified
    versions_seen: set[str] = field(default_factory=set)

    def merge(self, other: KillStats) -> None:
        self.kills += other.kills
        self.torn += other.torn
        self.leaked += other.leaked
        self.temps_left_by_kills += other.temps_left_by_kills
        self.kills_mid_write += other.kills_mid_write
        self.swept_checks += other.swept_checks
        self.versions_seen |= other.versions_seen


class DaemonKiller:
    """Starts `python -m bridge run` again and again and SIGKILLs it at random moments."""

    def __init__(self, world: ShortLivedStack, config: Path, outdir: Path, logdir: Path,
                 rng: random.Random) -> None:
        self.world = world
        self.config = config
        self.outdir = outdir
        self.logdir = logdir
        self.rng = rng
        self.stats = KillStats()
        self._pending: set[Path] = set()  # temp files a kill left, until a sweep is proven
        self._runs = 0

    def _spawn(self) -> tuple[subprocess.Popen[str], Path]:
        self._runs += 1
        log = self.logdir / f"daemon-{self._runs % 2}.log"
        return start_bridge("run", "--config", str(self.config), log=log), log

    @staticmethod
    def _wait_running(proc: subprocess.Popen[str], log: Path, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if RUNNING_LINE in log.read_text(errors="replace"):
                return True
            if proc.poll() is not None:
                raise AssertionError(f"the daemon exited {proc.returncode}: "
                                     f"{log.read_text(errors='replace')[-2000:]}")
            time.sleep(0.005)
        return False

    def kill_once(self, *, max_after_running: float = 1.5, early: float = 0.15,
                  burst: float = 0.45) -> None:
        """One run: start, SIGKILL at a random moment, check the files and the previous
        kill's temps. The moment is, by share: `early` during start-up (imports, sweep,
        recover); `burst` 0-15 ms after the n-th (random n of 1..5) "refreshed" log line
        of the first refresh round, when the write pass it triggers is under way; the
        rest 0-`max_after_running` s after "running", while the files are rewritten."""
        proc, log = self._spawn()
        try:
            draw = self.rng.random()
            if draw < early:
                time.sleep(self.rng.uniform(0.0, 0.8))
                swept = RUNNING_LINE in log.read_text(errors="replace")
            elif draw < early + burst:
                swept = self._wait_running(proc, log, timeout=30.0)
                self._wait_log_count("refreshed ", self.rng.randint(1, 5), log, timeout=10.0)
                _spin(self.rng.uniform(0.0, 0.015))
            else:
                swept = self._wait_running(proc, log, timeout=30.0)
                time.sleep(self.rng.uniform(0.0, max_after_running))
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        self._after_kill(swept)

    @staticmethod
    def _wait_log_count(needle: str, count: int, log: Path, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if log.read_text(errors="replace").count(needle) >= count:
                return
            time.sleep(0.0002)

    def _after_kill(self, swept: bool) -> None:
        s = self.stats
        s.kills += 1
        if swept:
            s.swept_checks += 1
            s.leaked += [str(p) for p in self._pending if p.exists()]
            self._pending.clear()
        s.torn += check_daemon_outputs(self.outdir, self.world.issued())
        left = temp_files(self.outdir)
        s.temps_left_by_kills += len(left)
        s.kills_mid_write += bool(left)
        self._pending |= set(left)
        aws_json = self.outdir / "aws" / f"{AWS_TARGETS[0]}.json"
        with contextlib.suppress(OSError, ValueError, KeyError):
            s.versions_seen.add(json.loads(aws_json.read_text())["AccessKeyId"])

    def final_clean_run(self) -> None:
        """Start once more, let the sweep run and every file be written, stop with
        SIGTERM: nothing may be left but complete files."""
        proc, log = self._spawn()
        try:
            assert self._wait_running(proc, log, timeout=30.0), "the daemon never came up"
            self.stats.swept_checks += 1
            self.stats.leaked += [str(p) for p in self._pending if p.exists()]
            self._pending.clear()
            time.sleep(1.0)  # past the first write pass and the first refreshes
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline and not all(
                    (self.outdir / name).exists() for name in EXPECTED_FILES):
                time.sleep(0.05)
        finally:
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=30)
        assert code == 0, log.read_text(errors="replace")[-2000:]
        self.stats.leaked += [str(p) for p in temp_files(self.outdir)]
        self.stats.torn += check_daemon_outputs(self.outdir, self.world.issued())


# -- the forked writer ---------------------------------------------------------------

FORK_AWS = ("fa", "fb")
FORK_GCP = ("fg",)
FORK_CONFIG = """
workload_api: {socket: "unix:///run/unused.sock"}
outputs: {directory: "%s"}
targets:
  - {name: fa, jwt_file: true, aws: {role_arn: "arn:aws:iam::111122223333:role/r",
                                     region: us-east-1}}
  - {name: fb, aws: {role_arn: "arn:aws:iam::111122223333:role/r", region: us-east-1}}
  - name: fg
    jwt_file: true
    gcp: {workload_identity_provider: "%s", service_account: "%s"}
"""
_FAR = 4_000_000_000.0  # every forked version expires in 2096: nothing is removed


def fork_targets(outdir: Path) -> tuple[TargetConfig, ...]:
    text = FORK_CONFIG % (outdir, GCP_PROVIDER, DEMO_SERVICE_ACCOUNT)
    return parse_config(text, env={}).targets


def _digest(*parts: object) -> str:
    return hashlib.sha256(":".join(map(str, parts)).encode()).hexdigest()


def versioned_statuses(seed: int, version: int) -> dict[str, TargetStatus]:
    """Version `version` of every forked target: each value derives from (seed, version,
    target), so a reader can recompute the whole file from any one field."""
    statuses: dict[str, TargetStatus] = {}
    for name in (*FORK_AWS, *FORK_GCP):
        h = _digest(seed, version, name)
        expires = _FAR + version
        material: AwsCredentials | GcpToken
        if name in FORK_AWS:
            material = AwsCredentials(access_key_id=f"ASIA{seed:06d}{version:010d}",
                                      secret_access_key=h[:40],
                                      session_token=(h * 40)[:2500], expires_at=expires)
        else:
            material = GcpToken(access_token=f"ya29.{seed}.{version}.{(h * 20)[:1200]}",
                                expires_at=expires, principal=DEMO_SERVICE_ACCOUNT)
        cred = Credential(target=name, issued_at=0.0, expires_at=expires,
                          svid_expires_at=expires, material=material, deadline=expires,
                          received=0.0)
        svid = JwtSvid(spiffe_id="spiffe://example.org/demo", audience="a", expires_at=_FAR,
                       issued_at=0.0, token=f"eyJ.{seed}.{version}.{name}.{(h * 8)[:600]}",
                       deadline=_FAR)
        statuses[name] = TargetStatus(name=name, state=State.FRESH, credential=cred,
                                      svid=svid, delivered=True)
    return statuses


def check_forked_outputs(outdir: Path, seeds: Collection[int]) -> list[str]:
    """Problems with the forked writers' files: each must be exactly one version that a
    writer of one of `seeds` produced (every field recomputed from the version named)."""
    problems: list[str] = []

    def expect(seed: int, version: int) -> dict[str, TargetStatus] | None:
        if seed not in seeds or version < 0:
            return None
        return versioned_statuses(seed, version)

    def aws_ok(where: str, name: str, key: str, secret: str, token: str) -> None:
        try:
            seed, version = int(key[4:10]), int(key[10:])
        except ValueError:
            problems.append(f"{where}: access key {key[:8]}... is not a forked version")
            return
        want = expect(seed, version)
        cred = want[name].credential if want else None
        aws = cred.material if cred else None
        if not isinstance(aws, AwsCredentials) or (key, secret, token) != (
                aws.access_key_id, aws.secret_access_key, aws.session_token):
            problems.append(f"{where}: not one complete version")

    def seed_version(text: str, prefix: str) -> tuple[int, int] | None:
        parts = text.split(".")
        if len(parts) < 4 or parts[0] != prefix:
            return None
        try:
            return int(parts[1]), int(parts[2])
        except ValueError:
            return None

    for path in _output_files(outdir, problems):
        rel = path.relative_to(outdir).as_posix()
        try:
            text = path.read_text()
            if rel == "aws/credentials":
                ini = configparser.ConfigParser(interpolation=None)
                ini.read_string(text)
                if sorted(ini.sections()) != sorted(FORK_AWS):
                    problems.append(f"{rel}: sections {ini.sections()}")
                for name in ini.sections():
                    sec = ini[name]
                    aws_ok(f"{rel}[{name}]", name, sec["aws_access_key_id"],
                           sec["aws_secret_access_key"], sec["aws_session_token"])
            elif rel.startswith("aws/") and rel.endswith(".json"):
                name = rel[4:-5]
                doc = json.loads(text)
                if doc["Version"] != 1 or parse_utc_iso(doc["Expiration"]) < _FAR:
                    problems.append(f"{rel}: Version/Expiration wrong")
                aws_ok(rel, name, doc["AccessKeyId"], doc["SecretAccessKey"],
                       doc["SessionToken"])
            elif rel.startswith("gcp/") and rel.endswith((".token", ".json")):
                name = rel[4:].rsplit(".", 1)[0]
                doc = json.loads(text) if rel.endswith(".json") else {"token": text}
                sv = seed_version(doc["token"], "ya29")
                want = expect(*sv) if sv else None
                cred = want[name].credential if want else None
                gcp = cred.material if cred else None
                if cred is None or not isinstance(gcp, GcpToken) or (
                        doc["token"] != gcp.access_token):
                    problems.append(f"{rel}: not one complete version")
                elif rel.endswith(".json") and (
                        parse_utc_iso(doc["expiry"]) != int(cred.expires_at)
                        or doc["principal"] != gcp.principal):
                    problems.append(f"{rel}: fields of different versions")
            elif rel.startswith("jwt/") and rel.endswith(".jwt"):
                name = rel[4:-4]
                sv = seed_version(text, "eyJ")
                want = expect(*sv) if sv else None
                svid = want[name].svid if want else None
                if svid is None or text != svid.token:
                    problems.append(f"{rel}: not one complete version")
            else:
                problems.append(f"{rel}: unexpected file")
        except (ValueError, KeyError, TypeError, configparser.Error) as exc:
            problems.append(f"{rel}: does not parse: {type(exc).__name__}: {exc}")
    return problems


def _child_write_loop(outdir: Path, targets: tuple[TargetConfig, ...], seed: int,
                      signal_fd: int) -> None:
    """In the forked child: the real prepare (sweep), then apply() forever."""
    directory = credential_directory(OutputsConfig(outdir), targets)
    directory.prepare()
    os.write(signal_fd, b"p")  # prepared: the sweep is done
    version = 0
    while True:
        failures = directory.apply(versioned_statuses(seed, version), time.time())
        if failures:
            os.write(signal_fd, b"f")
        version += 1


class ForkKiller:
    """Forks writers of the real CredentialDirectory and SIGKILLs them mid-loop."""

    def __init__(self, outdir: Path, rng: random.Random, *, max_offset: float = 0.004) -> None:
        self.outdir = outdir
        self.rng = rng
        self.max_offset = max_offset
        self.stats = KillStats()
        self._targets = fork_targets(outdir)
        self._pending: set[Path] = set()
        self._seeds: list[int] = []

    def kill_once(self) -> None:
        seed = len(self._seeds) + 1
        self._seeds.append(seed)
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: never returns, whatever happens
            code = 0
            try:
                os.close(read_fd)
                _child_write_loop(self.outdir, self._targets, seed, write_fd)
            except BaseException:
                code = 70
            finally:
                os._exit(code)
        os.close(write_fd)
        try:
            ready, _, _ = select.select([read_fd], [], [], 30.0)
            first = os.read(read_fd, 1) if ready else b""
            if first != b"p":
                raise AssertionError("forked writer did not finish prepare() in 30 s")
            # The sweep of the previous kill's temp files is done: they must be gone.
            self.stats.swept_checks += 1
            self.stats.leaked += [str(p) for p in self._pending if p.exists()]
            self._pending.clear()
            _spin(self.rng.uniform(0.0, self.max_offset))
        finally:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            failed = _drain(read_fd)
            os.close(read_fd)
        if b"f" in failed:
            self.stats.torn.append(f"forked writer {seed}: apply() reported write failures")
        self._after_kill()

    def _after_kill(self) -> None:
        s = self.stats
        s.kills += 1
        s.torn += check_forked_outputs(self.outdir, self._seeds)
        left = temp_files(self.outdir)
        s.temps_left_by_kills += len(left)
        s.kills_mid_write += bool(left)
        self._pending |= set(left)
        with contextlib.suppress(OSError, ValueError, KeyError):
            s.versions_seen.add(json.loads((self.outdir / "aws" / "fa.json").read_text())
                                ["AccessKeyId"])

    def final_sweep(self) -> None:
        """A last real prepare(): the previous kill's temp files must go, nothing else left."""
        credential_directory(OutputsConfig(self.outdir), self._targets).prepare()
        self.stats.swept_checks += 1
        self.stats.leaked += [str(p) for p in self._pending if p.exists()]
        self.stats.leaked += [str(p) for p in temp_files(self.outdir)]
        self._pending.clear()


def _spin(seconds: float) -> None:
    """Busy-wait: sleep() granularity (~50-100 µs plus scheduling) is too coarse."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def _drain(fd: int) -> bytes:
    os.set_blocking(fd, False)
    chunks = []
    with contextlib.suppress(BlockingIOError):
        while chunk := os.read(fd, 4096):
            chunks.append(chunk)
    return b"".join(chunks)
