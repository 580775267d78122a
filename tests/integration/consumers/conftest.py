"""A consumer matrix: the bridge's outputs read by unmodified non-Python SDKs.

One world per test package: the dev stack (whose AWS STS and Google emulators run
their clocks behind ours, so the shortest sessions they grant last a few real
seconds), the bridge as a real `python -m bridge run` process serving every output
(files, credential_process, container endpoint, IMDSv2, GCE metadata), and a poller
recording every credential the bridge's files held. The consumers (built by
tests/tools/install-consumers.sh) run as subprocesses with an environment of only what
their SDK documents, print fingerprints (never secrets) as JSON lines, and the tests
compare those with what the bridge held and the emulators issued.

Only `DevStack` and the constants of `bridge.devstack.stack` are imported from the
bridge; the emulators with lagging clocks are built from the stack's own classes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from bridge.devstack import DevStack
from bridge.devstack.stack import DEMO_ROLE_ARN, DEMO_SERVICE_ACCOUNT, GCP_PROVIDER
from tests.support.require import unavailable

ROOT = Path(__file__).resolve().parents[3]
TOOLS = (Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
         / "spiffe-bridge" / "tools" / "consumers")
GO = TOOLS / "go" / "consumer"
NODE_DIR = TOOLS / "node"
JAVA_DIR = TOOLS / "java"
AWS_CLI = TOOLS / "awscli" / "bin" / "aws"
INSTALL = "bash tests/tools/install-consumers.sh"

# Real seconds a session lives: the emulators' clocks lag by (their minimum - this).
# The bridge refreshes at a quarter of it, so a consumer that re-fetches sees a new
# credential within about AWS_LIFETIME / 4 seconds.
AWS_LIFETIME = 30.0
AWS_MIN_DURATION = 900.0  # STS's shortest session (the config's `duration: 15m`)
GCP_LIFETIME = 30.0
GCP_MIN_LIFETIME = 600.0  # the shortest `lifetime` the bridge accepts
SVID_BACKDATE = 600  # JWT-SVIDs are minted this far in the past (the GCP clock lags)
SVID_LEFT = 1800  # ... and live this long from now
PROJECT_ID = "consumer-project"
PROBE_ACCOUNT = "probe@dev-project.iam.gserviceaccount.com"
ASSUMED = "arn:aws:sts::111122223333:assumed-role/demo/"
AWS_TARGET = "app"
GCP_TARGET = "gsa"
_JWT_SHAPE = re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]+")


def sha(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def parse_time(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC).timestamp()


def need(path: Path, what: str) -> Path:
    """`path` if it exists; else skip (with how to install it), or fail under CI=true."""
    if not path.exists():
        unavailable(f"{what} not installed at {path} (install: {INSTALL})")
    return path


def need_tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        message = (f"`{name}` is not on PATH: the {name} consumers cannot run (install: "
                   f"{name} from the machine's packages, then {INSTALL})")
        unavailable(message)
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


# -- what the bridge held --------------------------------------------------------------


@dataclass(frozen=True)
class Held:
    """One credential as the bridge's files showed it (fingerprint and expiry only)."""

    fp: str
    expires_at: float
    first_seen: float
    key_id: str = ""


class FilePoller:
    """Reads aws/<t>.json and gcp/<t>.json every 50 ms and remembers every credential
    seen, by fingerprint. The bridge replaces a credential at a quarter of its life
    (several seconds), so none slips between two reads."""

    def __init__(self, outdir: Path) -> None:
        self._aws = outdir / "aws" / f"{AWS_TARGET}.json"
        self._gcp = outdir / "gcp" / f"{GCP_TARGET}.json"
        self.aws: dict[str, Held] = {}
        self.gcp: dict[str, Held] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bridge-file-poller",
                                        daemon=True)

    def start(self) -> FilePoller:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self.poll()

    def poll(self) -> None:
        now = time.time()
        with contextlib.suppress(OSError, ValueError, KeyError):
            doc = json.loads(self._aws.read_text())
            fp = sha(doc["AccessKeyId"] + doc["SessionToken"])
            with self._lock:
                self.aws.setdefault(fp, Held(fp, parse_time(doc["Expiration"]), now,
                                             doc["AccessKeyId"]))
        with contextlib.suppress(OSError, ValueError, KeyError):
            doc = json.loads(self._gcp.read_text())
            fp = sha(doc["token"])
            with self._lock:
                self.gcp.setdefault(fp, Held(fp, parse_time(doc["expiry"]), now))

    def aws_held(self) -> dict[str, Held]:
        with self._lock:
            return dict(self.aws)

    def gcp_held(self) -> dict[str, Held]:
        with self._lock:
            return dict(self.gcp)

    def held_eventually(self, kind: str, fps: list[str], timeout: float = 3.0) -> dict[str, Held]:
        """The record, once it holds every one of `fps` (or after `timeout`): a metadata
        endpoint serves a new credential from memory a moment before the file write, and a
        consumer can print it and exit within one poll interval."""
        deadline = time.monotonic() + timeout
        while True:
            self.poll()
            held = self.aws_held() if kind == "aws" else self.gcp_held()
            if set(fps) <= set(held) or time.monotonic() > deadline:
                return held
            time.sleep(0.05)

    def wait_new(self, kind: str, after: int, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while len(getattr(self, kind)) <= after:
            if time.monotonic() > deadline:
                raise AssertionError(f"the bridge delivered no new {kind} credential "
                                     f"within {timeout}s")
            time.sleep(0.05)


# -- the world -------------------------------------------------------------------------


@dataclass
class World:
    stack: DevStack
    outdir: Path
    config: Path
    home: Path
    log: Path
    process: subprocess.Popen[bytes]
    poller: FilePoller
    container_port: int
    imds_port: int
    gce_port: int
    bridge_cli: Path
    bridge_cli_env: dict[str, str] = field(default_factory=dict)

    @property
    def sts_url(self) -> str:
        url: str = self.stack.aws.url
        return url

    @property
    def check_url(self) -> str:
        """IAM generateIdToken of the probe account: 200 only for a valid token that the
        Google emulator issued (the demo service account is its token creator)."""
        return (f"{self.stack.gcp_iam_url}/v1/projects/-/serviceAccounts/"
                f"{PROBE_ACCOUNT}:generateIdToken")

    @property
    def container_url(self) -> str:
        return f"http://127.0.0.1:{self.container_port}/v1/credentials/{AWS_TARGET}"

    @property
    def container_token_file(self) -> Path:
        return self.outdir / "container.token"

    @property
    def imds_url(self) -> str:
        return f"http://127.0.0.1:{self.imds_port}/"

    @property
    def gce_host(self) -> str:
        return f"127.0.0.1:{self.gce_port}"

    @property
    def credentials_file(self) -> Path:
        return self.outdir / "aws" / "credentials"

    @property
    def token_json_file(self) -> Path:
        return self.outdir / "gcp" / f"{GCP_TARGET}.json"

    @property
    def external_account_file(self) -> Path:
        return self.outdir / "gcp" / f"{GCP_TARGET}.external_account.json"

    def credential_process_config(self, directory: Path, profile: str = AWS_TARGET) -> Path:
        """An AWS config file whose profile runs `spiffe-bridge credential-process`."""
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / "aws-config"
        command = (f"{self.bridge_cli} credential-process --target {AWS_TARGET} "
                   f"--config {self.config}")
        if self.bridge_cli_env:  # only when testing a copy of the tree, not the install
            command = "env " + " ".join(f"{k}={v}" for k, v in self.bridge_cli_env.items()) \
                + " " + command
        path.write_text(f"[profile {profile}]\ncredential_process = {command}\n"
                        "region = us-east-1\n")
        return path

    def secrets(self) -> set[str]:
        """Every secret value in play: keys, tokens, the container token, the SVIDs."""
        values: set[str] = set()
        for issued in self.stack.aws.issued:
            values.update((issued.secret_access_key, issued.session_token))
        for token in self.stack.gcp.issued:
            values.add(token.token)
        with contextlib.suppress(OSError):
            values.add(self.container_token_file.read_text())
        with contextlib.suppress(OSError):
            values.add((self.outdir / "jwt" / f"{GCP_TARGET}.jwt").read_text())
        return {v for v in values if len(v) >= 16}

    def google_issued(self) -> dict[str, Any]:
        """Fingerprint -> the emulator's record of every Google token it issued."""
        return {sha(t.token): t for t in self.stack.gcp.issued}

    def aws_issued(self) -> dict[str, Any]:
        return {sha(c.access_key_id + c.session_token): c for c in self.stack.aws.issued}

    def assert_alive(self) -> None:
        if self.process.poll() is not None:
            raise AssertionError(f"the bridge exited with {self.process.returncode}: "
                                 f"{self.log.read_text()[-3000:]}")


def _lagging_stack(workdir: Path) -> DevStack:
    """A DevStack whose STS emulators' clocks lag, so the minimum sessions (15 min AWS,
    10 min GCP) end AWS_LIFETIME / GCP_LIFETIME real seconds after they are issued, and
    whose JWT-SVIDs are backdated so the lagging Google emulator does not find them
    issued in the future. The emulators are the stack's own classes, rebuilt with the
    `clock` their constructors take, and answers dated by the real clock (`date_clock`)
    so the bridge, which trusts Expiration minus Date, sees the short real lifetime."""
    stack = DevStack(workdir)
    aws_lag = AWS_MIN_DURATION - AWS_LIFETIME
    gcp_lag = GCP_MIN_LIFETIME - GCP_LIFETIME
    stack.aws = type(stack.aws)(clock=lambda: time.time() - aws_lag, date_clock=time.time)
    stack.gcp = type(stack.gcp)(clock=lambda: time.time() - gcp_lag, date_clock=time.time)
    stack.start()

    def backdated(spiffe_id: str, audience: tuple[str, ...]) -> str:
        now = int(time.time())
        token: str = stack.authority.mint(spiffe_id, list(audience), SVID_BACKDATE + SVID_LEFT,
                                          iat=now - SVID_BACKDATE)
        return token

    stack.workload.faults.replace_svids(backdated)
    stack.gcp.add_service_account(PROBE_ACCOUNT,
                                  token_creators=[f"serviceAccount:{DEMO_SERVICE_ACCOUNT}"])
    return stack


def _bridge_cli_env() -> dict[str, str]:
    """Extra environment the installed `spiffe-bridge` script needs to import *this*
    tree (empty when the venv's editable install points here, the normal case)."""
    probe = subprocess.run([sys.executable, "-c", "import bridge; print(bridge.__file__)"],
                           cwd="/", capture_output=True, text=True, check=False)
    installed = (Path(probe.stdout.strip()).resolve().parent.parent
                 if probe.returncode == 0 else None)
    return {} if installed == ROOT else {"PYTHONPATH": str(ROOT)}


def _bridge_config(stack: DevStack, outdir: Path, workdir: Path,
                   ports: Mapping[str, int]) -> dict[str, Any]:
    return {
        "workload_api": {"socket": stack.workload_socket_uri, "timeout": "5s"},
        "outputs": {"directory": str(outdir)},
        "grpc": {"socket": f"unix://{workdir}/bridge.sock"},
        "http": {"address": "127.0.0.1:0"},
        "metadata": {
            "container": {"address": f"127.0.0.1:{ports['container']}"},
            # The consumers run as this test's uid: only it may read IMDS and GCE.
            "imds": {"address": f"127.0.0.1:{ports['imds']}", "allowed_uids": [os.getuid()]},
            "gce": {"address": f"127.0.0.1:{ports['gce']}", "project_id": PROJECT_ID,
                    "allowed_uids": [os.getuid()]},
        },
        "targets": [
            {"name": AWS_TARGET, "serve": ["container", "imds"],
             "aws": {"role_arn": DEMO_ROLE_ARN, "region": "us-east-1", "duration": "15m",
                     "sts_endpoint": stack.aws.url}},
            {"name": GCP_TARGET, "serve": ["gce"], "jwt_file": True,
             "gcp": {"workload_identity_provider": GCP_PROVIDER,
                     "service_account": DEMO_SERVICE_ACCOUNT,
                     "lifetime": "10m",
                     "sts_endpoint": stack.gcp_sts_url,
                     "iam_credentials_endpoint": stack.gcp_iam_url,
                     "external_account_file": True}},
        ],
    }


def _wait_ready(world: World, timeout: float = 40.0) -> None:
    deadline = time.monotonic() + timeout
    wanted = [world.outdir / "aws" / f"{AWS_TARGET}.json",
              world.outdir / "gcp" / f"{GCP_TARGET}.json",
              world.external_account_file, world.container_token_file]
    while True:
        world.assert_alive()
        ports_up = True
        for port in (world.container_port, world.imds_port, world.gce_port):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            except OSError:
                ports_up = False
        if ports_up and all(p.exists() for p in wanted):
            return
        if time.monotonic() > deadline:
            raise AssertionError("the bridge did not deliver within "
                                 f"{timeout}s: {world.log.read_text()[-3000:]}")
        time.sleep(0.1)


@pytest.fixture(scope="package")
def world() -> Iterator[World]:
    workdir = Path(tempfile.mkdtemp(prefix="sbc-", dir="/tmp"))
    shm = Path(tempfile.mkdtemp(prefix="sbc-out-", dir="/dev/shm"))
    outdir = shm / "creds"
    stack = _lagging_stack(workdir / "stack")
    ports = {"container": _free_port(), "imds": _free_port(), "gce": _free_port()}
    config = workdir / "bridge.yaml"
    config.write_text(yaml.safe_dump(_bridge_config(stack, outdir, workdir, ports)))
    log = workdir / "bridge.log"
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(workdir),
           "PYTHONPATH": str(ROOT), "PYTHONDONTWRITEBYTECODE": "1"}
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "bridge", "run", "--config", str(config),
             "--log-level", "DEBUG"],
            cwd=ROOT, env=env, stdout=sink, stderr=subprocess.STDOUT)
    poller = FilePoller(outdir).start()
    home = workdir / "home"
    home.mkdir()
    made = World(stack=stack, outdir=outdir, config=config, home=home, log=log,
                 process=process, poller=poller, container_port=ports["container"],
                 imds_port=ports["imds"], gce_port=ports["gce"],
                 bridge_cli=Path(sys.prefix) / "bin" / "spiffe-bridge",
                 bridge_cli_env=_bridge_cli_env())
    try:
        _wait_ready(made)
        yield made
        made.assert_alive()
    finally:
        poller.stop()
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
        stack.stop()
        leaked = [s for s in made.secrets() if s in log.read_text(errors="replace")]
        shutil.rmtree(shm, ignore_errors=True)
        shutil.rmtree(workdir, ignore_errors=True)
    assert not leaked, f"{len(leaked)} secret value(s) reached the bridge's log"


# -- running consumers -----------------------------------------------------------------


@dataclass
class Run:
    argv: list[str]
    code: int
    events: list[dict[str, Any]]
    stdout: str
    stderr: str

    def of(self, event: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e.get("event") == event]

    @property
    def credentials(self) -> list[dict[str, Any]]:
        return self.of("credential")

    @property
    def distinct(self) -> list[str]:
        """Fingerprints in the order first seen."""
        return list(dict.fromkeys(e["fp"] for e in self.credentials))

    def explain(self) -> str:
        errors = [e for e in self.events if e.get("event") in ("error", "timeout")
                  or e.get("call") == "error"]
        return (f"{' '.join(self.argv[:3])}… exit {self.code}; errors: {errors[:4]}; "
                f"stderr tail: {self.stderr[-1500:]}")


def consumer_env(world: World, extra: Mapping[str, str]) -> dict[str, str]:
    """Only what the SDK documents, plus PATH and an empty HOME (no ~/.aws, no gcloud
    ADC file). Shared AWS files point nowhere unless the test names them, and IMDS is
    off unless the test is about it, so no chain wanders off loopback."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(world.home),
           "LANG": "C.UTF-8",
           "AWS_CONFIG_FILE": "/nonexistent/aws-config",
           "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/aws-credentials",
           "AWS_EC2_METADATA_DISABLED": "true"}
    env.update(extra)
    return {k: v for k, v in env.items() if v}


def run_consumer(world: World, argv: list[str], env: Mapping[str, str],
                 timeout: float = 100.0) -> Run:
    world.assert_alive()
    proc = subprocess.run(argv, env=dict(env), capture_output=True, text=True,
                          timeout=timeout, check=False, cwd=world.home)
    events = []
    for line in proc.stdout.splitlines():
        if line.startswith("{"):
            with contextlib.suppress(ValueError):
                events.append(json.loads(line))
    run = Run(argv, proc.returncode, events, proc.stdout, proc.stderr)
    leaked = [s for s in world.secrets() if s in proc.stdout or s in proc.stderr]
    assert not leaked, f"{len(leaked)} secret value(s) in the consumer's output: {run.explain()}"
    assert not _JWT_SHAPE.search(proc.stdout), "a JWT in the consumer's stdout"
    return run


def go(world: World, mode: str, env: Mapping[str, str], *args: str) -> Run:
    binary = need(GO, "the Go consumer")
    return run_consumer(world, [str(binary), "-mode", mode, "-sts", world.sts_url,
                                "-check", world.check_url, *args], env)


def node(world: World, mode: str, env: Mapping[str, str], *args: str) -> Run:
    script = need(NODE_DIR / "consumer.js", "the Node consumer")
    return run_consumer(world, [need_tool("node"), str(script), "--mode", mode,
                                "--sts", world.sts_url, "--check", world.check_url, *args],
                        env)


def java(world: World, mode: str, env: Mapping[str, str], want: int = 1,
         timeout: int = 30) -> Run:
    jar = need(JAVA_DIR / "consumer.jar", "the Java consumer")
    classpath = f"{jar}:{JAVA_DIR / 'lib'}/*"
    # -XX:-UsePerfData: no /tmp/hsperfdata_<user> left behind by the tests
    return run_consumer(world, [need_tool("java"), "-XX:-UsePerfData", "-cp", classpath,
                                "bridgeconsumer.Consumer",
                                mode, world.sts_url, str(want), str(timeout), "500"], env)


# -- checks ----------------------------------------------------------------------------


def check_aws(world: World, run: Run, *, want: int, window: float = 0.0,
              expiry: bool = True) -> None:
    """Each credential the SDK reported is one the bridge held, its GetCallerIdentity
    (signed by the SDK with it) succeeded as the demo role, and the expiry it reported
    is the bridge's, less the SDK's documented refresh `window` (seconds)."""
    assert run.code == 0, run.explain()
    held = world.poller.held_eventually("aws", run.distinct)
    assert len(run.distinct) >= want, run.explain()
    for event in run.credentials:
        assert event["fp"] in held, f"the SDK used a credential the bridge never held: {event}"
        assert event.get("call") == "ok", run.explain()
        assert str(event.get("arn", "")).startswith(ASSUMED), event
        if expiry:
            reported = parse_time(event["expires"])
            expected = held[event["fp"]].expires_at - window
            assert abs(reported - expected) <= 1.5, (
                f"reported expiry {event['expires']} vs the bridge's "
                f"{datetime.fromtimestamp(held[event['fp']].expires_at, UTC).isoformat()} "
                f"less {window}s")
    _in_bridge_order(run.distinct, held)


def check_gcp(world: World, run: Run, *, want: int, held: Mapping[str, Any] | None = None,
              tolerance: float = 2.5, expiry: bool = True) -> None:
    """Each token the SDK reported is one the bridge held (or, for external_account,
    one the Google emulator issued to the SDK's own exchange), the emulator accepted
    it, and its reported expiry matches."""
    assert run.code == 0, run.explain()
    if held is None:
        held = {fp: h.expires_at
                for fp, h in world.poller.held_eventually("gcp", run.distinct).items()}
    assert len(run.distinct) >= want, run.explain()
    for event in run.credentials:
        assert event["fp"] in held, f"the SDK used a token that was never issued: {event}"
        assert event.get("call") == "ok", run.explain()
        if not expiry:
            continue
        reported = parse_time(event["expires"])
        assert abs(reported - held[event["fp"]]) <= tolerance, (
            f"reported expiry {event['expires']} vs "
            f"{datetime.fromtimestamp(held[event['fp']], UTC).isoformat()}")


def _in_bridge_order(seen: list[str], held: Mapping[str, Held]) -> None:
    order = sorted(held.values(), key=lambda h: h.first_seen)
    rank = {h.fp: i for i, h in enumerate(order)}
    assert [rank[fp] for fp in seen] == sorted(rank[fp] for fp in seen), (
        "the SDK went back to an older credential")
