"""The per-workload lifecycle with a fake broker and a fake hop: attested per request,
one mint per (identity, rule), bounded, dropped when idle or gone."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import threading
from collections.abc import Sequence
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from bridge.clouds import HopConfig, Link
from bridge.clouds.aws.material import AwsCredentials
from bridge.config import parse_config
from bridge.errors import SourceError
from bridge.logs import Redactor
from bridge.metrics import Metrics
from bridge.model import JwtSvid, Material
from bridge.refresh.limits import Limits
from bridge.serving.processes import CallerProcess, unix_caller
from bridge.testing import FakeClock
from bridge.workloads import WorkloadCredentials, WorkloadError

RULE = "ns-aws"
DOC = {
    "workload_api": {"socket": "unix:///run/spire/api.sock"},
    "outputs": {"directory": "/run/spiffe-bridge"},
    "broker": {"socket": "unix:///run/spire/b/b.sock", "agent_id": "spiffe://td/spire/agent/*"},
    "workloads": {"grpc_socket": "unix:///run/spiffe-bridge/w.sock"},
    "workload_targets": [{
        "name": RULE, "match": "spiffe://td/ns/{ns}",
        "aws": {"role_arn": "arn:aws:iam::111122223333:role/{ns}", "region": "us-east-1"},
        "serve": {"grpc": True}}],
}


class FakeBroker:
    """Answers every PID with `ids` (or raises `error`), counting calls."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.ids = ["spiffe://td/ns/a"]
        self.error: SourceError | None = None
        self.calls = 0

    def fetch(self, pid: int, audience: str, *, deadline: float) -> list[JwtSvid]:
        self.calls += 1
        if self.error is not None:
            raise self.error
        now, mono = self.clock.time(), self.clock.monotonic()
        return [JwtSvid(spiffe_id=i, audience=audience, expires_at=now + 300, issued_at=now,
                        token=f"t.{i}.s", deadline=mono + 300) for i in self.ids]


class FakeHop:
    name, scope, judge = "aws_web_identity", "sts", "aws"

    def __init__(self, owner: FakeSession) -> None:
        self.owner = owner

    def exchange(self, material: Material) -> Material:
        assert isinstance(material, JwtSvid)
        with self.owner.lock:
            self.owner.subjects.append(material.spiffe_id)
        self.owner.gate.wait(5)
        return AwsCredentials(f"AKIA{len(self.owner.subjects)}", "s", "t",
                              expires_at=self.owner.clock.time() + 3600)


class FakeSession:
    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.subjects: list[str] = []
        self.lock = threading.Lock()
        self.gate = threading.Event()
        self.gate.set()

    def build(self, hop: HopConfig, *, link: Link, earlier: Sequence[HopConfig]) -> list[Any]:
        return [FakeHop(self)]

    def mint(self, hop: HopConfig, *, audience: str) -> list[Any]:
        raise AssertionError("no token hops here")


@pytest.fixture
def me() -> Any:
    a, b = socket.socketpair()
    caller = unix_caller(a)
    yield caller
    caller.close()
    a.close()
    b.close()


def _lifecycle(clock: FakeClock, broker: FakeBroker, session: FakeSession,
               **kw: Any) -> tuple[WorkloadCredentials, Metrics]:
    config = parse_config(yaml.safe_dump(DOC), env={})
    metrics = Metrics(CollectorRegistry())
    credentials = WorkloadCredentials(
        config.workload_targets, broker=broker, sessions=lambda _cloud: session,
        clock=clock, metrics=metrics, redactor=Redactor(), limits=Limits(8),
        idle=kw.get("idle", 600.0), max_identities=kw.get("max_identities", 8))
    return credentials, metrics


def _run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_concurrent_first_requests_share_one_mint(me: CallerProcess) -> None:
    """Five callers of one identity at once: one exchange, one credential for all."""
    clock = FakeClock()
    broker, session = FakeBroker(clock), FakeSession(clock)
    credentials, metrics = _lifecycle(clock, broker, session)

    async def go() -> list[Any]:
        session.gate.clear()
        asks = [asyncio.create_task(credentials.get(me, RULE, timeout=10)) for _ in range(5)]
        await asyncio.sleep(0.2)
        session.gate.set()
        return list(await asyncio.gather(*asks))

    granted = _run(go())
    assert session.subjects == ["spiffe://td/ns/a"]
    assert {g.status.credential.material.access_key_id for g in granted} == {"AKIA1"}
    assert broker.calls == 5  # every request was attested
    assert metrics.registry.get_sample_value(
        "spiffe_bridge_workload_requests_total", {"rule": RULE, "result": "ok"}) == 5


def test_each_identity_has_its_own_credential(me: CallerProcess) -> None:
    clock = FakeClock()
    broker, session = FakeBroker(clock), FakeSession(clock)
    credentials, metrics = _lifecycle(clock, broker, session)

    async def go() -> tuple[Any, Any]:
        a = await credentials.get(me, RULE, timeout=10)
        broker.ids = ["spiffe://td/other", "spiffe://td/ns/b"]  # the first matching ID
        b = await credentials.get(me, RULE, timeout=10)
        return a, b

    a, b = _run(go())
    assert (a.spiffe_id, b.spiffe_id) == ("spiffe://td/ns/a", "spiffe://td/ns/b")
    assert session.subjects == ["spiffe://td/ns/a", "spiffe://td/ns/b"]
    assert a.status.credential is not b.status.credential
    assert metrics.registry.get_sample_value(
        "spiffe_bridge_workload_identities", {"rule": RULE}) == 2


@pytest.mark.parametrize(("ids", "error", "kind"), [
    (["spiffe://td/other"], None, "denied"),
    ([], SourceError("no identity issued", retryable=False, reason="no_identity"), "denied"),
    ([], SourceError("agent down", retryable=True, reason="unavailable"), "unavailable"),
], ids=["no-matching-id", "no-identity", "broker-down"])
def test_refusals(me: CallerProcess, ids: list[str], error: SourceError | None,
                  kind: str) -> None:
    clock = FakeClock()
    broker, session = FakeBroker(clock), FakeSession(clock)
    broker.ids, broker.error = ids, error
    credentials, _ = _lifecycle(clock, broker, session)
    with pytest.raises(WorkloadError) as info:
        _run(credentials.get(me, RULE, timeout=5))
    assert info.value.kind == kind
    assert session.subjects == []


def test_the_bound_refuses_new_identities_and_counts(me: CallerProcess) -> None:
    clock = FakeClock()
    broker, session = FakeBroker(clock), FakeSession(clock)
    credentials, metrics = _lifecycle(clock, broker, session, max_identities=1)

    async def go() -> None:
        await credentials.get(me, RULE, timeout=5)
        broker.ids = ["spiffe://td/ns/b"]
        await credentials.get(me, RULE, timeout=5)

    with pytest.raises(WorkloadError) as info:
        _run(go())
    assert info.value.kind == "exhausted"
    assert metrics.registry.get_sample_value(
        "spiffe_bridge_workload_identity_limit_total", {"rule": RULE}) == 1


def test_idle_identities_are_dropped(me: CallerProcess) -> None:
    clock = FakeClock()
    broker, session = FakeBroker(clock), FakeSession(clock)
    credentials, metrics = _lifecycle(clock, broker, session, idle=60.0)

    async def go() -> None:
        await credentials.get(me, RULE, timeout=5)
        credentials.sweep()
        assert credentials.live == 1
        await clock.advance(61)
        credentials.sweep()

    _run(go())
    assert credentials.live == 0
    assert metrics.registry.get_sample_value(
        "spiffe_bridge_workload_dropped_total", {"rule": RULE, "reason": "idle"}) == 1


def test_an_identity_whose_processes_are_gone_is_dropped(tmp_path: Any) -> None:
    """The only process that asked exits: the next sweep drops its identity."""
    clock = FakeClock()
    broker, session = FakeBroker(clock), FakeSession(clock)
    credentials, metrics = _lifecycle(clock, broker, session)
    path = str(tmp_path / "s")
    server = socket.socket(socket.AF_UNIX)
    server.bind(path)
    server.listen(1)
    child = subprocess.Popen([sys.executable, "-c", (
        "import socket,sys; s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); "
        "sys.stdin.read()"), path], stdin=subprocess.PIPE)
    conn, _ = server.accept()
    caller = unix_caller(conn)
    assert caller is not None
    _run(credentials.get(caller, RULE, timeout=5))
    credentials.sweep()
    assert credentials.live == 1
    child.communicate(b"", timeout=10)
    credentials.sweep()
    assert credentials.live == 0
    assert metrics.registry.get_sample_value(
        "spiffe_bridge_workload_dropped_total", {"rule": RULE, "reason": "gone"}) == 1
    caller.close()
    conn.close()
    server.close()


def test_a_caller_gone_before_the_answer_gets_nothing() -> None:
    """Not there any more once the broker answers: refused, nothing minted."""
    clock = FakeClock()
    broker, session = FakeBroker(clock), FakeSession(clock)
    credentials, _ = _lifecycle(clock, broker, session)
    caller = CallerProcess(pid=2**22 + 7, uid=0, start="1")  # no such process
    with pytest.raises(WorkloadError) as info:
        _run(credentials.get(caller, RULE, timeout=5))
    assert info.value.reason == "caller_gone"
    assert session.subjects == []


def test_a_live_workloads_credential_is_refreshed_with_a_fresh_svid(me: CallerProcess) -> None:
    """At the policy's time the key refreshes by itself: a new SVID fetched through the
    broker for the (still live) process that asked, and a new exchange."""
    clock = FakeClock()
    broker, session = FakeBroker(clock), FakeSession(clock)
    credentials, metrics = _lifecycle(clock, broker, session, idle=7200.0)

    async def go() -> tuple[Any, Any]:
        first = await credentials.get(me, RULE, timeout=5)
        calls = broker.calls
        await clock.advance(45 * 60)  # past half of the 1 h credential
        assert broker.calls > calls
        second = await credentials.get(me, RULE, timeout=5)
        return first, second

    first, second = _run(go())
    assert session.subjects == ["spiffe://td/ns/a", "spiffe://td/ns/a"]
    assert first.status.credential is not second.status.credential
    assert metrics.registry.get_sample_value(
        "spiffe_bridge_workload_refresh_total", {"rule": RULE, "result": "success"}) == 2
