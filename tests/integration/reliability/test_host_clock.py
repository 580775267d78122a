"""Fault scenarios: the daemon's host clock is wrong (RELIABILITY.md (a), issue 19).

The real daemon process runs under libfaketime (its wall clock only; the monotonic
clock stays real), while the agent, the clouds' emulators and the never-expired checker
run in this process on the real clock and judge by real time. The AWS target gets
sessions that really end 45 s after issue (an STS whose clock is 855 s behind, dated by
the real clock), so it refreshes every ~11 s through every step; the GCP target gets
real one-hour tokens; the AWS target also writes its JWT-SVID file.

What must hold, every step:
- nothing expired by real time is read from a file, the JWT file or gRPC (checker);
- credentials keep being served: a step never takes a target down;
- the expiries written for SDKs move with the host clock (an SDK on the host compares
  them with that clock), within the library's re-read delay;
- the skew is exported (`clock_skew_seconds`), each step counted (`clock_steps_total`).
"""

from __future__ import annotations

import re
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from bridge.client import ApiError, BridgeClient
from bridge.config import load_config
from bridge.devstack import DevStack
from bridge.devstack.aws import ASSUME_ROLE_WITH_WEB_IDENTITY, AwsStsEmulator
from bridge.model import parse_utc_iso
from tests.support.configs import CALLER
from tests.support.expiry import (
    ExpiryChecker,
    Issued,
    StartChecker,
    mint_on,
    target_doc,
    write_config,
)
from tests.support.faketime import REREAD, HostClock
from tests.support.process import stop, with_http_port
from tests.support.values import trusting_sts
from tests.support.wait import wait_for

pytestmark = pytest.mark.integration
LIFE = 45  # seconds an AWS session really lasts
# Seconds per clock setting: more than one AWS refresh. A session shorter than the SDKs'
# window refreshes at a point of [1/4, 1/2] of its life (the fleet spread), so half of it.
HOLD = LIFE * 0.5 + 2.0
HOUR = 3600.0
SPEED_TESTS = {"test_a_clock_running_ten_times_fast_neither_storms_nor_serves_expired"}


@dataclass
class Faked:
    host: HostClock
    sts: AwsStsEmulator
    stack: DevStack
    checker: ExpiryChecker
    outdir: Path
    port: int

    def sample(self, name: str, labels: str = "") -> float:
        return _sample(self.port, name, labels)

    def written_offset(self) -> float:
        """The AWS file's Expiration minus the real expiry of the key it holds."""
        doc = (self.outdir / "aws" / "aws.json").read_text()
        key = re.search(r'"AccessKeyId": "([^"]+)"', doc)
        written = re.search(r'"Expiration": "([^"]+)"', doc)
        assert key, doc
        assert written, doc
        real = Issued([self.sts]).aws_expiry(key.group(1))
        assert real is not None
        return parse_utc_iso(written.group(1)) - real


def _sample(port: int, name: str, labels: str = "") -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        page = r.read().decode()
    found = re.search(rf"^{name}{re.escape(labels)} (\S+)$", page, re.M)
    assert found, f"{name}{labels} not exported"
    return float(found.group(1))


@pytest.fixture
def make_host(short_dir: Path) -> Iterator[Callable[..., HostClock]]:
    """make(speeds=False) -> a HostClock; its processes' libfaketime shared memory in
    /dev/shm is removed at teardown (the daemon exits through os._exit)."""
    made: list[HostClock] = []

    def make(*, speeds: bool = False) -> HostClock:
        made.append(HostClock(short_dir, speeds=speeds))
        return made[-1]

    yield make
    for host in made:
        host.close()


@pytest.fixture
def faked(stack: DevStack, outdir: Path, short_dir: Path, expiry_checker: StartChecker,
          make_host: Callable[..., HostClock], request: pytest.FixtureRequest) -> Iterator[Faked]:
    """The daemon process on a libfaketime clock (set to real time + 0 first), delivered."""
    host = make_host(speeds=request.node.originalname in SPEED_TESTS)
    sts = trusting_sts(stack, offset=-(900 - LIFE), short_lived=True)
    aws = target_doc("aws", stack, jwt_file=True)
    aws["aws"].update(duration="15m", sts_endpoint=sts.url)
    path = write_config(short_dir / "bridge.yaml", stack, outdir, [aws, target_doc("gcp", stack)])
    port = with_http_port(path)
    proc = host.start("run", "--config", str(path), log=short_dir / "log")
    try:
        wait_for(lambda: (outdir / "aws" / "aws.json").exists()
                 and (outdir / "gcp" / "gcp.json").exists(), "the first credentials",
                 timeout=30)
        # The daemon's absolute expiries are in its clock's terms.
        checker = expiry_checker(load_config(path), aws=[sts], gcp=[stack.gcp], host=host)
        yield Faked(host, sts, stack, checker, outdir, port)
    finally:
        code, _, _ = stop(proc)
        sts.stop()
        log = (short_dir / "log").read_text()
        assert "Traceback" not in log, log[-3000:]
    assert code == 0, log[-3000:]


def _hold(f: Faked, seconds: float) -> None:
    """Keep the setting for `seconds`, checking both targets are served the whole time."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(1.0)
        sweep = f.checker.sweep()
        assert {"grpc:aws", "grpc:gcp"} <= sweep.served(), {
            c: r.outcome for c, r in sweep.reads.items()}


@pytest.mark.timeout(300)  # five settings held HOLD seconds each
@pytest.mark.parametrize("steps", [(HOUR, -HOUR, 2 * HOUR, -2 * HOUR, 0.0)],
                         ids=["+1h,-1h,+2h,-2h,back"])
def test_clock_steps_never_serve_expired_and_rewrite_expiries_in_host_terms(
        faked: Faked, steps: tuple[float, ...]) -> None:
    f = faked
    refreshes = f.sts.faults.calls(ASSUME_ROLE_WITH_WEB_IDENTITY)
    for n, offset in enumerate(steps, start=1):
        f.host.set(offset)
        _hold(f, HOLD)
        print(f"step {offset:+.0f}: written {f.written_offset():+.0f}, "
              f"{len(f.checker.violations)} violations so far")
        assert abs(f.written_offset() - offset) < 3.0, (offset, f.written_offset())
        skew = f.sample("spiffe_bridge_clock_skew_seconds", '{service="aws_sts"}')
        assert abs(skew + offset) < 3.0, (offset, skew)
        assert f.sample("spiffe_bridge_clock_steps_total") >= n
        calls = f.sts.faults.calls(ASSUME_ROLE_WITH_WEB_IDENTITY)
        assert calls > refreshes, f"no AWS refresh while the clock was {offset:+.0f}s"
        refreshes = calls
    # The GCP token (an hour long) was never refreshed early by a step, nor dropped.
    assert f.sample("spiffe_bridge_refresh_total", '{result="failure",target="gcp"}') == 0


def test_a_clock_running_ten_times_fast_neither_storms_nor_serves_expired(faked: Faked) -> None:
    f = faked
    before = f.sts.faults.calls(ASSUME_ROLE_WITH_WEB_IDENTITY)
    f.host.set(0.0, speed=10.0)
    _hold(f, 2 * HOLD)
    calls = f.sts.faults.calls(ASSUME_ROLE_WITH_WEB_IDENTITY) - before
    # One refresh per ~11 s of real time; a storm would be one per second or more.
    assert 1 <= calls <= 2 * HOLD / 11 + 2, calls
    assert f.sample("spiffe_bridge_refresh_total", '{result="failure",target="aws"}') == 0


def test_started_with_the_clock_an_hour_ahead_serves_right_away_without_a_storm(
        stack: DevStack, outdir: Path, short_dir: Path, expiry_checker: StartChecker,
        make_host: Callable[..., HostClock]) -> None:
    """The host (its SPIRE agent and server too: SVIDs are minted on its clock) runs an
    hour ahead of the cloud. Every AWS session looks expired by this host's clock on
    arrival: lifetimes come from the answers' own `Date`, so each is served for its real
    life and refreshed on schedule, not in a loop."""
    host = make_host()
    host.set(HOUR)
    mint_on(stack, lambda: time.time() + HOUR)
    sts = trusting_sts(stack, offset=-(900 - LIFE), short_lived=True)
    aws = target_doc("aws", stack)
    aws["aws"].update(duration="15m", sts_endpoint=sts.url)
    path = write_config(short_dir / "bridge.yaml", stack, outdir, [aws])
    port = with_http_port(path)
    proc = host.start("run", "--config", str(path), log=short_dir / "log")
    try:
        wait_for((outdir / "aws" / "aws.json").exists, "the first credential", timeout=30)
        checker = expiry_checker(load_config(path), aws=[sts], host=host)
        time.sleep(2 * HOLD)
        assert checker.sweep().reads["grpc:aws"].served
        calls = sts.faults.calls(ASSUME_ROLE_WITH_WEB_IDENTITY)
        assert 3 <= calls <= 2 * HOLD / 11 + 3, f"{calls} STS calls in {2 * HOLD:.0f}s"
        # Every refresh succeeded, the later ones judging the SVIDs by the cloud's clock.
        assert _sample(port, "spiffe_bridge_refresh_total",
                       '{result="failure",target="aws"}') == 0
    finally:
        code, _, _ = stop(proc)
        sts.stop()
    log = (short_dir / "log").read_text()
    assert code == 0, log[-3000:]
    assert "Traceback" not in log, log[-3000:]


def test_a_host_clock_stepped_back_does_not_stretch_a_caller_svid(
        stack: DevStack, outdir: Path, short_dir: Path,
        make_host: Callable[..., HostClock]) -> None:
    """This host's clock steps an hour back: a caller SVID that expired 10 s ago (real
    time) looks valid by it, but is judged by the later of this host's and the clouds'
    clock, so it is refused; a current one is served."""
    host = make_host()
    target = target_doc("aws", stack, allowed_callers=[CALLER])
    path = write_config(short_dir / "bridge.yaml", stack, outdir, [target])
    proc = host.start("run", "--config", str(path), log=short_dir / "log")
    try:
        wait_for((outdir / "aws" / "aws.json").exists, "the first credential", timeout=30)
        host.set(-HOUR)
        time.sleep(REREAD + 1.0)
        now = int(time.time())
        expired = stack.authority.mint(CALLER, ["spiffe-bridge"], 300,
                                       extra_claims={"iat": now - 310, "exp": now - 10})
        current = stack.authority.mint(CALLER, ["spiffe-bridge"], 300)
        with (BridgeClient(f"unix://{short_dir}/bridge.sock", svid=lambda: expired) as client,
              pytest.raises(ApiError) as refused):
            client.get_credential("aws")
        assert refused.value.code == "UNAUTHENTICATED"
        with BridgeClient(f"unix://{short_dir}/bridge.sock", svid=lambda: current) as client:
            assert client.get_credential("aws").material is not None
    finally:
        code, _, _ = stop(proc)
    log = (short_dir / "log").read_text()
    assert code == 0, log[-3000:]
