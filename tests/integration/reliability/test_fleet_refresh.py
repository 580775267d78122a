"""The fleet work on the real daemon (a `run` process) against the dev stack's STS:
300 targets with 15 min sessions started together refresh spread over their safe
window, exactly where the bridge's policy (and the fleet simulation's model) puts each
one; then a 429 storm at STS is absorbed with no permanent failure and no lapse.

The STS emulator's clock lags by 780 s and its answers are dated by the real clock, so
a 15 min session (DurationSeconds 900, AWS's minimum) ends 120 real seconds after it is
issued (the bridge trusts Expiration minus Date): the test takes under two minutes. A
session that short cannot keep botocore's 15 min window, so its safe window is 25-50 %
of its life, [30 s, 60 s] after issue; today's policy puts every one at exactly 30 s.
"""

from __future__ import annotations

import json
import math
import signal
import urllib.request
from collections import Counter, defaultdict
from pathlib import Path

import pytest
import yaml

from bridge.devstack import DEMO_ROLE_ARN, DevStack
from bridge.devstack.faults import HttpFailure
from bridge.refresh.policy import Policy
from tests.bench.fleet_model import Fleet, Kind
from tests.conftest import WriteConfig
from tests.support.process import start_bridge, stop, with_http_port
from tests.support.values import trusting_sts
from tests.support.wait import wait_for

pytestmark = pytest.mark.integration

TARGETS = 300
SESSION = 900.0   # what the bridge asks for: AWS's minimum
LIFETIME = 120.0  # what it really lasts (the emulator's clock lags SESSION - LIFETIME)
NODE = "fleet-test-node"
ACTION = "AssumeRoleWithWebIdentity"


def _names() -> list[str]:
    return [f"t{i:03d}" for i in range(TARGETS)]


def _exchanges(sts: object) -> dict[str, list[float]]:
    """Per target (its session name), the emulator-clock times of its exchanges."""
    seen: dict[str, list[float]] = defaultdict(list)
    for r in sts.requests:  # type: ignore[attr-defined]
        if r.action == ACTION:
            seen[r.params.get("RoleSessionName", "")].append(r.received_at)
    return seen


def _model_delays() -> dict[str, float]:
    """The fleet model's refresh delay of each target: the bridge's policy and spread for
    this node's names, a 120 s AWS credential, on the model's virtual clock."""
    log: list[tuple[float, str, str]] = []
    kind = Kind("aws-15m-short", ("aws_sts 123456789012 us-east-1",), LIFETIME, "aws")
    names = _names()
    fleet = Fleet(1, fleet_work=True, start=0.0, end=200.0, fleet_size=1, call_log=log,
                  mix=(kind,) * TARGETS, node_name=lambda i: NODE,
                  target_name=lambda i, k: names[i])
    fleet.start_node(0, 0.0)
    fleet.run(LIFETIME * 0.6)
    calls: dict[str, list[float]] = defaultdict(list)
    for when, name, _ in log:
        calls[name].append(when)
    return {n: c[1] - c[0] for n, c in calls.items() if len(c) >= 2}


def _metrics(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        return r.read().decode()


def _ready(port: int) -> dict[str, object] | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=10) as r:
            return json.loads(r.read())  # type: ignore[no-any-return]
    except urllib.error.HTTPError as exc:
        return json.loads(exc.read())  # type: ignore[no-any-return]
    except OSError:
        return None  # not listening yet


def test_targets_started_together_spread_their_refreshes_and_absorb_a_429_storm(
        stack: DevStack, write_config: WriteConfig, short_dir: Path) -> None:
    """Started together, 300 targets' second exchanges (at the emulator's request log)
    span over half of the [30, 60] s window, each within 2 s of where the model puts
    it; 150 answers of 429 then cost retries only: no permanent failure, no target ever
    without a valid credential, every target refreshed again."""
    sts = trusting_sts(stack, offset=-(SESSION - LIFETIME), short_lived=True)
    try:
        config = write_config([
            {"name": n, "aws": {"role_arn": DEMO_ROLE_ARN, "region": "us-east-1",
                                "sts_endpoint": sts.url, "duration": "15m",
                                "session_name": n}} for n in _names()])
        doc = yaml.safe_load(config.read_text())
        doc["refresh"] = {"node_id": NODE, "concurrency": 64}
        config.write_text(yaml.safe_dump(doc))
        port = with_http_port(config)
        log = short_dir / "bridge.log"
        proc = start_bridge("run", "--config", str(config), log=log)
        try:
            wait_for(lambda: (_ready(port) or {}).get("ready"), "all 300 targets delivered",
                     timeout=40, detail=lambda: log.read_text()[-2000:])
            lapsed: list[str] = []

            def refreshed_twice() -> bool:
                body = _ready(port) or {}
                if not body.get("ready"):
                    lapsed.append(json.dumps(body)[:300])
                return all(len(v) >= 2 for v in _exchanges(sts).values())

            wait_for(refreshed_twice, "every target's second exchange", timeout=80,
                     interval=0.5)
            seen = _exchanges(sts)
            assert sorted(seen) == _names()
            delays = {n: t[1] - t[0] for n, t in seen.items()}
            earliest, latest = Policy(min_remaining=900.0).safe_window(
                issued_at=0.0, expires_at=LIFETIME)
            assert (earliest, latest) == (30.0, 60.0)
            assert min(delays.values()) >= earliest - 2.0
            assert max(delays.values()) <= latest + 2.0
            ordered = sorted(delays.values())
            spread = ordered[int(0.95 * TARGETS)] - ordered[int(0.05 * TARGETS)]
            assert spread >= 0.5 * (latest - earliest), spread
            # The model (the bridge's own policy and draws for this node) agrees per target.
            predicted = _model_delays()
            off = {n: round(delays[n] - predicted[n], 2) for n in delays
                   if abs(delays[n] - predicted[n]) > 2.0}
            assert len(off) <= TARGETS // 20, off

            # A 429 storm: the next 150 exchanges are throttled.
            sts.faults.fail_next(ACTION, HttpFailure(429, "TooManyRequestsException",
                                                     "Rate exceeded"), times=150)
            storm = len(sts.requests)

            def all_refreshed_after_storm() -> bool:
                body = _ready(port) or {}
                if not body.get("ready"):
                    lapsed.append(json.dumps(body)[:300])
                if sts.faults.pending_failures(ACTION):
                    return False
                after = defaultdict(int)
                for r in sts.requests[storm:]:
                    after[r.params.get("RoleSessionName", "")] += 1
                return len(after) == TARGETS
            wait_for(all_refreshed_after_storm, "every target refreshed through the storm",
                     timeout=80, interval=0.5)
            assert lapsed == [], lapsed[:3]
            page = _metrics(port)
            assert "spiffe_bridge_permanent_failure{" in page
            assert not [line for line in page.splitlines()
                        if line.startswith("spiffe_bridge_permanent_failure{")
                        and not line.endswith(" 0.0")]
            throttles = [float(line.rsplit(" ", 1)[1]) for line in page.splitlines()
                         if line.startswith("spiffe_bridge_quota_throttles_total{")]
            assert sum(throttles) == 150
            assert "spiffe_bridge_next_refresh_timestamp_seconds{target=\"t000\"}" in page
        finally:
            code, _, _ = stop(proc, signal.SIGTERM)
        assert code == 0
    finally:
        sts.stop()


LOCKED_LIFETIME = 240.0  # the shortest whose safe window (60-120 s) is wide enough to lock
LOCKED_PERIOD = 90.0     # its middle


@pytest.mark.timeout(240)  # the second exchanges come up to 120 s after the first
def test_a_numbered_bridge_refreshes_on_its_phases_evenly_spaced_at_the_sts(
        stack: DevStack, write_config: WriteConfig, short_dir: Path) -> None:
    """With `refresh.node_index`, 300 targets started together make their second
    exchange on their wall-clock phases: at the emulator's request log, every one sits
    on one lattice of 300 points over the 90 s lock period (within a tenth of a second
    for most), so each second sees 3 or 4 of them, not Poisson's clumps."""
    sts = trusting_sts(stack, offset=-(SESSION - LOCKED_LIFETIME), short_lived=True)
    offset = -(SESSION - LOCKED_LIFETIME)
    assert Policy(min_remaining=900.0).lock_period(LOCKED_LIFETIME) == LOCKED_PERIOD
    try:
        config = write_config([
            {"name": n, "aws": {"role_arn": DEMO_ROLE_ARN, "region": "us-east-1",
                                "sts_endpoint": sts.url, "duration": "15m",
                                "session_name": n}} for n in _names()])
        doc = yaml.safe_load(config.read_text())
        # One bridge of one: its 300 targets, one class, are that lattice's points.
        doc["refresh"] = {"node_id": NODE, "node_index": 0, "fleet_size": 1,
                          "concurrency": 64}
        config.write_text(yaml.safe_dump(doc))
        port = with_http_port(config)
        log = short_dir / "bridge.log"
        proc = start_bridge("run", "--config", str(config), log=log)
        try:
            wait_for(lambda: (_ready(port) or {}).get("ready"), "all 300 targets delivered",
                     timeout=40, detail=lambda: log.read_text()[-2000:])
            wait_for(lambda: all(len(v) >= 2 for v in _exchanges(sts).values()),
                     "every target's second exchange", timeout=LOCKED_LIFETIME * 0.5 + 30,
                     interval=0.5)
        finally:
            code, _, _ = stop(proc, signal.SIGTERM)
        assert code == 0
        seen = _exchanges(sts)
        assert sorted(seen) == _names()
        second = [t[1] - offset for t in seen.values()]  # wall-clock instants
        # Each on a point of one lattice: k / 300 of the period from a common origin.
        slots = [(w / LOCKED_PERIOD * TARGETS) % 1.0 for w in second]
        origin = math.atan2(sum(math.sin(2 * math.pi * s) for s in slots),
                            sum(math.cos(2 * math.pi * s) for s in slots)) / (2 * math.pi)
        off = sorted(abs(((s - origin + 0.5) % 1.0) - 0.5) * LOCKED_PERIOD / TARGETS
                     for s in slots)
        assert off[len(off) // 2] < 0.1, off[len(off) // 2]
        assert off[int(0.9 * len(off))] < 0.25, off[int(0.9 * len(off))]
        # ... and every point once: 300 distinct lattice points.
        points = {round(w / LOCKED_PERIOD * TARGETS - origin) % TARGETS for w in second}
        assert len(points) >= TARGETS - 5, len(points)
        per_second = Counter(int(w) for w in second)
        inner = [per_second[s] for s in range(min(per_second) + 1, max(per_second))]
        assert max(inner) <= 5, sorted(per_second.items())
        assert sum(inner) / len(inner) >= 3.0
    finally:
        sts.stop()
