"""Fault switches: queued failures, latency, interruption, SVID replacement."""

from __future__ import annotations

import threading
import time

import grpc
import pytest

from bridge.devstack import (
    ANY_OPERATION,
    FaultSwitches,
    GrpcFailure,
    HttpFailure,
    WorkloadFaults,
)

UNAVAILABLE = GrpcFailure(grpc.StatusCode.UNAVAILABLE, "down")


def test_fail_next_is_consumed_in_order() -> None:
    """Queued failures are returned once each, oldest first, then calls proceed."""
    faults: FaultSwitches[HttpFailure] = FaultSwitches()
    faults.fail_next("op", HttpFailure(503, "ServiceUnavailable"), times=2)
    faults.fail_next("op", HttpFailure(400, "Throttling"))
    codes = [getattr(faults.before("op"), "code", None) for _ in range(4)]
    assert codes == ["ServiceUnavailable", "ServiceUnavailable", "Throttling", None]


def test_failures_are_per_operation_with_wildcard_fallback() -> None:
    """A failure for one operation leaves others alone; ANY_OPERATION matches all."""
    faults: FaultSwitches[GrpcFailure] = FaultSwitches()
    faults.fail_next("a", UNAVAILABLE)
    assert faults.before("b") is None
    faults.fail_next(ANY_OPERATION, UNAVAILABLE)
    assert faults.before("b") == UNAVAILABLE
    assert faults.pending_failures("a") == 1


def test_fail_next_rejects_non_positive_times() -> None:
    """times must be at least one."""
    with pytest.raises(ValueError, match="positive"):
        FaultSwitches[GrpcFailure]().fail_next("a", UNAVAILABLE, times=0)


def test_latency_delays_calls() -> None:
    """set_latency makes before() sleep about that long."""
    faults: FaultSwitches[GrpcFailure] = FaultSwitches()
    faults.set_latency(0.3, operation="slow")
    started = time.monotonic()
    faults.before("fast")
    assert time.monotonic() - started < 0.2
    started = time.monotonic()
    faults.before("slow")
    assert time.monotonic() - started >= 0.3


def test_interrupt_wakes_sleeping_calls() -> None:
    """interrupt() cuts an added latency short (used when an emulator stops)."""
    faults: FaultSwitches[GrpcFailure] = FaultSwitches()
    faults.set_latency(30)
    done = threading.Event()

    def call() -> None:
        faults.before("x")
        done.set()

    thread = threading.Thread(target=call)
    thread.start()
    time.sleep(0.05)
    faults.interrupt()
    assert done.wait(2)
    thread.join(2)


def test_reset_restores_honest_behaviour() -> None:
    """reset() drops failures, latency and call counts."""
    faults: FaultSwitches[GrpcFailure] = FaultSwitches()
    faults.before("b")
    faults.fail_next("a", UNAVAILABLE)
    faults.set_latency(5)
    faults.reset()
    started = time.monotonic()
    assert faults.before("a") is None
    assert time.monotonic() - started < 0.5
    assert faults.calls("b") == 0
    assert faults.calls("a") == 1


def test_negative_latency_rejected() -> None:
    """Latency cannot be negative."""
    with pytest.raises(ValueError, match="negative"):
        FaultSwitches[GrpcFailure]().set_latency(-1)


def test_svid_replacement_counts_down() -> None:
    """replace_svids(times=n) applies to n fetches, then minting resumes."""
    faults = WorkloadFaults()
    faults.replace_svids("garbage", times=2)
    taken = [faults.take_svid_replacement() for _ in range(3)]
    assert taken == ["garbage", "garbage", None]


def test_svid_replacement_until_reset() -> None:
    """Without times, the replacement stays until reset()."""
    faults = WorkloadFaults()
    faults.replace_svids(lambda spiffe_id, audience: f"{spiffe_id}|{','.join(audience)}")
    for _ in range(3):
        assert faults.take_svid_replacement() is not None
    faults.reset()
    assert faults.take_svid_replacement() is None
