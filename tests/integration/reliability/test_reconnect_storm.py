"""Fault scenarios: reconnect storms, RELIABILITY.md (a) rows 1 (a crash-looping agent;
spire#743: a tight reconnect loop leaked connections) and 15 (many readers).

- The Workload API crash-loops (up, but every bundle stream it accepts fails
  UNAVAILABLE at once), then flaps: stopped and started again 10 times in about two
  seconds, with refreshes attempted while it is down; then 4 times ends the bundle
  stream with INVALID_ARGUMENT, which ends py-spiffe's watch for good (the bridge drops
  that client and the next refresh makes a new one). The bridge re-opens its bundle
  stream at a bounded rate (py-spiffe's backoff, 0.1 s doubling, and gRPC's reconnect
  backoff; not a tight loop), keeps serving the last good credential, refreshes fine
  afterwards, and leaks no thread and no file descriptor (counts before and after,
  both measured after a warm-up; file descriptors process-wide).
- A reader storm: 8 threads each open and close 25 gRPC connections and read both
  targets over each, plus the container endpoint. Every read is served from memory: no
  reader reaches the agent or a cloud, and nothing leaks.
"""

from __future__ import annotations

import gc
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from functools import partial

import grpc
import pytest

from bridge.client import BridgeClient
from bridge.devstack import FETCH_JWT_BUNDLES, FETCH_JWT_SVID, GrpcFailure
from tests.support.expiry import FOREVER, MakeScenario, _http, open_fds

pytestmark = pytest.mark.integration
FLAPS = 10
RESTARTS = 4  # watches ended by a non-retryable stream error, clients replaced
CRASH_LOOP = 1.5  # seconds the agent accepts streams only to fail them
THREAD_SLACK = 3  # a leak per flap or per client would be 10+
FD_SLACK = 6


def _threads() -> Counter[str]:
    """Live threads by name, digits dropped (`Thread-12 (watch)` -> `Thread- (watch)`);
    not the in-process emulators' own, nor the daemon's bounded `io` pool (it grows to
    refresh.concurrency + 4 on demand)."""
    return Counter("".join(c for c in t.name if not c.isdigit()) for t in threading.enumerate()
                   if not t.name.startswith(("devstack-", "io_")))


def _leaks(before: tuple[Counter[str], int]) -> str:
    gc.collect()
    threads, fds = _threads(), open_fds()
    grown = {k: v for k, v in (threads - before[0]).items() if v}
    if sum(threads.values()) > sum(before[0].values()) + THREAD_SLACK or (
            fds > before[1] + FD_SLACK):
        return f"threads +{sum(threads.values()) - sum(before[0].values())} {grown}, " \
               f"fds {before[1]} -> {fds}"
    return ""


def _settled_leaks(before: tuple[Counter[str], int], timeout: float = 3.0) -> str:
    """Leaks still there after `timeout` (threads and sockets wind down asynchronously)."""
    deadline = time.monotonic() + timeout
    while (found := _leaks(before)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return found


def test_workload_api_flapping_reconnects_at_a_bounded_rate_without_leaks(
        scenario: MakeScenario, caplog: pytest.LogCaptureFixture) -> None:
    s = scenario(metadata=True)
    workload = s.stack.workload

    def flap(pause: float) -> None:
        workload.stop(grace=0)
        time.sleep(pause)
        workload.start()

    flap(0.05)  # warm-up: gRPC's pools and py-spiffe's reconnect path exist before counting
    s.wait_for(lambda: s.bridge.refresh_all()[0].state == "fresh", "the warm-up refresh")
    gc.collect()
    before = (_threads(), open_fds())

    # Crash-looping: the agent is up, but every stream it accepts fails at once.
    workload.faults.fail_next(FETCH_JWT_BUNDLES, GrpcFailure(
        grpc.StatusCode.UNAVAILABLE, "agent is restarting"), times=FOREVER)
    looped = workload.faults.calls(FETCH_JWT_BUNDLES)
    flap(0.0)  # ends the open stream
    time.sleep(CRASH_LOOP)
    attempts = workload.faults.calls(FETCH_JWT_BUNDLES) - looped
    assert 1 <= attempts <= 8, f"{attempts} stream opens in {CRASH_LOOP}s: not backing off"
    workload.faults.reset()

    # Flapping: down and up again every 0.15 s, refreshes attempted while it is down.
    streams = workload.faults.calls(FETCH_JWT_BUNDLES)
    began = time.monotonic()
    for i in range(FLAPS):
        workload.stop(grace=0)
        if i % 3 == 0:
            [status] = s.bridge.refresh_all()
            assert (status.state, status.last_error) == ("stale", "unavailable")
        time.sleep(0.05)
        workload.start()
        time.sleep(0.1)
    flapping = time.monotonic() - began
    opened = workload.faults.calls(FETCH_JWT_BUNDLES) - streams
    # At most one stream per time the agent was up, plus py-spiffe's retries inside it
    # (gRPC's own reconnect backoff usually lets fewer through).
    assert opened <= 2 * FLAPS, (opened, flapping)

    s.wait_for(lambda: s.bridge.refresh_all()[0].state == "fresh", "a refresh afterwards")

    # A non-retryable stream error (INVALID_ARGUMENT) ends py-spiffe's watch: each time
    # the bridge drops its client and the next refresh makes a new one (a new channel, a
    # new watch thread), and none of the old ones may linger. (A malformed bundle no
    # longer ends the watch: it is skipped, issue 13.)
    for _ in range(RESTARTS):
        stopped = _stream_stops(caplog)
        workload.faults.fail_next(FETCH_JWT_BUNDLES, GrpcFailure(
            grpc.StatusCode.INVALID_ARGUMENT, "bad request"))
        flap(0.0)  # ends the open stream; the watch re-opens and gets INVALID_ARGUMENT
        s.wait_for(partial(_more_stops, caplog, stopped), "the watch to give up")
        workload.faults.reset()
        s.wait_for(lambda: s.bridge.refresh_all()[0].state == "fresh", "a new client")

    assert s.sweep().served() == {"file:aws/aws.json", "file:aws/credentials", "grpc:aws",
                                  "container:aws", "imds:aws"}
    assert not (leaked := _settled_leaks(before)), leaked
    print(f"crash loop: {attempts} stream opens in {CRASH_LOOP}s; {FLAPS} flaps in "
          f"{flapping:.1f}s: {opened} bundle streams opened; {RESTARTS} clients replaced")


def _stream_stops(caplog: pytest.LogCaptureFixture) -> int:
    return sum("JWT bundle stream stopped" in r.getMessage() for r in caplog.records)


def _more_stops(caplog: pytest.LogCaptureFixture, than: int) -> bool:
    return _stream_stops(caplog) > than


READERS = 8
CONNECTIONS = 25


def test_reader_reconnect_storm_never_reaches_the_agent_or_a_cloud_and_leaks_nothing(
        scenario: MakeScenario) -> None:
    s = scenario(("aws", "gcp"), metadata=True)
    socket = s.config.grpc.socket
    container = next(svc for svc in s.bridge.daemon.services
                     if getattr(svc, "endpoint", None) == "container")
    token = container.token_file.read_text()  # type: ignore[attr-defined]
    port = container.port  # type: ignore[attr-defined]

    def reader(connections: int) -> int:
        served = 0
        for _ in range(connections):
            with BridgeClient(socket, timeout=5) as client:  # a new connection each time
                for target in ("aws", "gcp"):
                    served += client.get_credential(target).expires_at is not None
            status, _ = _http(port, "GET", "/v1/credentials/aws", {"Authorization": token})
            served += status == 200
        return served

    reader(3)  # warm-up
    gc.collect()
    before = (_threads(), open_fds())
    calls = (len(s.stack.aws.requests), len(s.stack.gcp.requests),
             s.stack.workload.faults.calls(FETCH_JWT_SVID))
    began = time.monotonic()
    with ThreadPoolExecutor(READERS) as pool:
        served = sum(pool.map(reader, [CONNECTIONS] * READERS))
    took = time.monotonic() - began
    assert served == READERS * CONNECTIONS * 3
    assert (len(s.stack.aws.requests), len(s.stack.gcp.requests),
            s.stack.workload.faults.calls(FETCH_JWT_SVID)) == calls  # readers never refresh
    assert not (leaked := _settled_leaks(before)), leaked
    print(f"{served} reads over {READERS * CONNECTIONS} gRPC connections and "
          f"{READERS * CONNECTIONS} HTTP connections in {took:.1f}s")
