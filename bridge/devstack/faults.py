"""Fault switches shared by the dev-stack emulators. DEVELOPMENT ONLY.

Reliability tests need the fakes to misbehave on cue: fail the next N calls of one
operation with a chosen error, or answer slowly. Every emulator owns one
`FaultSwitches` whose failure type is its own wire error (`GrpcFailure` for the
Workload API, `HttpFailure` for the HTTP emulators); handlers call `before(op)`
first thing and turn a returned failure into their protocol's error reply.

Switches are per instance (no module state), thread-safe, and `reset()` puts an
emulator back to honest behaviour. Latency sleeps wake early on `interrupt()`, which
the emulators call when they stop, so a test never waits on a stopped server.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

import grpc

ANY_OPERATION = "*"
"""Operation name that matches every operation of an emulator."""

FailureT = TypeVar("FailureT")


@dataclass(frozen=True, slots=True)
class GrpcFailure:
    """A gRPC status a Workload API call should end with."""

    code: grpc.StatusCode
    message: str


@dataclass(frozen=True, slots=True)
class HttpFailure:
    """An HTTP error reply: status plus the service's error code and message.

    A status of 0 or an empty message lets the emulator use the usual status and
    text for `code` (e.g. 400 and "Rate exceeded" for STS `Throttling`).
    """

    status: int
    code: str
    message: str = ""


class FaultSwitches(Generic[FailureT]):
    """Queued failures and added latency, keyed by operation name.

    Operation names are the emulator's own: gRPC method names (`FetchJWTSVID`),
    STS actions (`AssumeRoleWithWebIdentity`) or HTTP paths. `ANY_OPERATION`
    matches all of them; a failure queued for a specific operation is used first.
    """

    def __init__(self) -> None:
        self._lock = threading.Condition()
        self._failures: dict[str, deque[FailureT]] = {}
        self._latency: dict[str, float] = {}
        self._calls: dict[str, int] = {}
        self._interrupts = 0

    def fail_next(self, operation: str, failure: FailureT, *, times: int = 1) -> None:
        """Make the next `times` calls of `operation` end with `failure`.

        Raises:
            ValueError: `times` is not positive.
        """
        if times < 1:
            raise ValueError(f"times must be positive, got {times}")
        with self._lock:
            self._failures.setdefault(operation, deque()).extend([failure] * times)

    def set_latency(self, seconds: float, *, operation: str = ANY_OPERATION) -> None:
        """Delay every call of `operation` by `seconds` (0 removes the delay).

        Raises:
            ValueError: `seconds` is negative.
        """
        if seconds < 0:
            raise ValueError(f"latency must not be negative, got {seconds}")
        with self._lock:
            if seconds == 0:
                self._latency.pop(operation, None)
            else:
                self._latency[operation] = seconds

    def pending_failures(self, operation: str) -> int:
        """How many queued failures `operation` would still consume (own queue only)."""
        with self._lock:
            return len(self._failures.get(operation, ()))

    def calls(self, operation: str) -> int:
        """How many calls of `operation` went through `before()` since the last reset."""
        with self._lock:
            return self._calls.get(operation, 0)

    def reset(self) -> None:
        """Forget every queued failure, latency and call count, and wake sleepers."""
        with self._lock:
            self._failures.clear()
            self._latency.clear()
            self._calls.clear()
            self._interrupts += 1
            self._lock.notify_all()

    def interrupt(self) -> None:
        """Wake every call currently sleeping in added latency (used on stop)."""
        with self._lock:
            self._interrupts += 1
            self._lock.notify_all()

    def before(self, operation: str) -> FailureT | None:
        """Apply the switches to one call: sleep the added latency, then pop a failure.

        Returns the failure the call must end with, or None to proceed normally.
        """
        with self._lock:
            self._calls[operation] = self._calls.get(operation, 0) + 1
            delay = self._latency.get(operation, self._latency.get(ANY_OPERATION, 0.0))
            if delay > 0:
                started = self._interrupts
                deadline = time.monotonic() + delay
                while self._interrupts == started:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    self._lock.wait(remaining)
            for key in (operation, ANY_OPERATION):
                queue = self._failures.get(key)
                if queue:
                    return queue.popleft()
            return None


SvidReplacement = str | Callable[[str, tuple[str, ...]], str]
"""What a faulty Workload API hands out instead of a minted SVID: a fixed string, or a
function of (SPIFFE ID, requested audiences) returning the token to send."""


class WorkloadFaults(FaultSwitches[GrpcFailure]):
    """Fault switches of the fake Workload API, plus SVID replacement.

    `replace_svids` makes FetchJWTSVID hand out caller-chosen tokens (garbage,
    expired, foreign-signed...) instead of freshly minted ones.
    """

    def __init__(self) -> None:
        super().__init__()
        self._replacement: SvidReplacement | None = None
        self._replacement_left: int | None = None

    def replace_svids(self, replacement: SvidReplacement, *, times: int | None = None) -> None:
        """Answer the next `times` FetchJWTSVID calls (all of them if None) with `replacement`.

        Raises:
            ValueError: `times` is given and not positive.
        """
        if times is not None and times < 1:
            raise ValueError(f"times must be positive, got {times}")
        with self._lock:
            self._replacement = replacement
            self._replacement_left = times

    def take_svid_replacement(self) -> SvidReplacement | None:
        """The replacement for one FetchJWTSVID call, consuming one of its `times`."""
        with self._lock:
            replacement = self._replacement
            if replacement is not None and self._replacement_left is not None:
                self._replacement_left -= 1
                if self._replacement_left == 0:
                    self._replacement = None
                    self._replacement_left = None
            return replacement

    def reset(self) -> None:
        """Forget every switch, including SVID replacement."""
        with self._lock:
            self._replacement = None
            self._replacement_left = None
        super().reset()
