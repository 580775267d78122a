"""The health server's Host rule (DNS rebinding) and bounds, on a real socket."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest

from bridge.serving.health import HealthServer
from tests.support.local_http import call


@pytest.fixture
def health() -> Iterator[HealthServer]:
    s = HealthServer("127.0.0.1:0", page=lambda: b"# metrics\n", statuses=dict,
                     now=time.monotonic, seconds_since_tick=lambda: 0.0, max_connections=4)
    s.start()
    yield s
    s.stop()


def _port(s: HealthServer) -> int:
    bound = s.bound_address
    assert bound is not None
    return bound[1]


@pytest.mark.parametrize("host", ["127.0.0.1:{p}", "10.1.2.3:9464", "10.1.2.3", "[::1]:9464",
                                  "[fd00::1]", "localhost:{p}", "LOCALHOST"])
def test_ip_literals_and_localhost_are_served(health: HealthServer, host: str) -> None:
    for path in ("/healthz", "/readyz", "/metrics"):
        status, _, _ = call(_port(health), path=path,
                            headers={"Host": host.format(p=_port(health))})
        assert status == 200, (host, path)


@pytest.mark.parametrize("host", ["rebind.attacker.example:{p}", "127.0.0.1.nip.io", "localhost.",
                                  "::1", "[::1]x", "10.1.2.3:http", "", "a b"])
def test_other_hosts_get_421_on_every_path(health: HealthServer, host: str) -> None:
    for path in ("/healthz", "/readyz", "/metrics"):
        status, _, body = call(_port(health), path=path,
                               headers={"Host": host.format(p=_port(health))})
        assert status == 421, (host, path)
        assert b"metrics" not in body


def test_idle_connections_beyond_the_cap_are_evicted_and_probes_answered(
        health: HealthServer) -> None:
    idle = [socket.create_connection(("127.0.0.1", _port(health)), timeout=5)
            for _ in range(12)]
    try:
        assert call(_port(health), path="/healthz")[0] == 200
        assert health.open_connections <= 4
    finally:
        for s in idle:
            s.close()


def test_is_ready_agrees_with_every_targets_own_readiness() -> None:
    """The fast check says ready exactly when each target is (delivered, valid at `now`,
    not expired), whatever the mix: one target not ready is enough to say no."""
    import itertools

    from bridge.model import Credential, IdToken, State, TargetStatus
    from bridge.serving.health import is_ready

    def status(name: str, state: State, deadline: float | None, delivered: bool) -> TargetStatus:
        cred = None if deadline is None else Credential(
            target=name, issued_at=0.0, expires_at=deadline, svid_expires_at=deadline,
            material=IdToken(token="t" * 16, subject="s", expires_at=deadline),
            deadline=deadline, received=0.0)
        return TargetStatus(name=name, state=state, credential=cred, delivered=delivered)

    kinds = [status("x", state, deadline, delivered) for state, deadline, delivered in
             itertools.product(State, (None, 5.0, 10.0, 20.0), (False, True))]
    now = 10.0  # 10.0 is the deadline itself: no longer valid
    assert any(k.ready(now) for k in kinds)
    assert not all(k.ready(now) for k in kinds)
    for pair in itertools.product(kinds, repeat=2):
        statuses = {f"t{i}": s for i, s in enumerate(pair)}
        assert is_ready(statuses, now) == all(s.ready(now) for s in pair)
    assert is_ready({}, now)
