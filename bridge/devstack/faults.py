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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
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


ECHO_TOKEN = "{token}"
"""In an `HttpFailure` message: replaced by the request's token (STS's WebIdentityToken,
GCP STS's subject_token), like a service that quotes the request in its error text."""


def echoing(failure: HttpFailure, token: str) -> HttpFailure:
    """`failure` with every ECHO_TOKEN in its message replaced by `token`."""
    if ECHO_TOKEN not in failure.message:
        return failure
    return replace(failure, message=failure.message.replace(ECHO_TOKEN, token))


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


@dataclass(frozen=True, slots=True)
class SvidEntry:
    """One `JWTSVID` message exactly as a faulty agent sends it: any SPIFFE ID field,
    token and hint, none of them checked against the request or each other."""

    spiffe_id: str
    svid: str
    hint: str = ""


SvidListReplacement = (
    Sequence[SvidEntry] | Callable[[str, tuple[str, ...]], Sequence[SvidEntry]]
)
"""A whole FetchJWTSVID answer: a fixed list of entries (possibly empty or with duplicate
hints), or a function of (requested SPIFFE ID or "", requested audiences) returning one."""


class WorkloadFaults(FaultSwitches[GrpcFailure]):
    """Fault switches of the fake Workload API, plus SVID and bundle replacement.

    - `replace_svids` makes FetchJWTSVID hand out caller-chosen tokens (garbage,
      expired, foreign-signed...) instead of freshly minted ones, one per identity.
    - `replace_svid_list` makes it answer with a caller-chosen list of `SvidEntry`
      (empty, duplicate hints, an identity that was not asked for...), bypassing the
      identity selection.
    - `replace_bundles` makes FetchJWTBundles send a caller-chosen map of raw bundle
      bytes (empty JWKS, malformed JSON, a trust domain missing...); open streams get
      it at once.
    """

    def __init__(self, on_bundles_change: Callable[[], None] | None = None) -> None:
        super().__init__()
        self._replacement: SvidReplacement | None = None
        self._replacement_left: int | None = None
        self._list_replacement: SvidListReplacement | None = None
        self._list_left: int | None = None
        self._bundles: dict[str, bytes] | None = None
        self._on_bundles_change = on_bundles_change or (lambda: None)

    def replace_svids(self, replacement: SvidReplacement, *, times: int | None = None) -> None:
        """Answer the next `times` FetchJWTSVID calls (all of them if None) with `replacement`.

        Raises:
            ValueError: `times` is given and not positive.
        """
        _check_times(times)
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

    def replace_svid_list(self, replacement: SvidListReplacement, *,
                          times: int | None = None) -> None:
        """Answer the next `times` FetchJWTSVID calls (all if None) with `replacement`.

        Takes precedence over `replace_svids`. The security header and the empty-audience
        check still apply first, as on a real agent.

        Raises:
            ValueError: `times` is given and not positive.
        """
        _check_times(times)
        if not callable(replacement):
            replacement = tuple(replacement)
        with self._lock:
            self._list_replacement = replacement
            self._list_left = times

    def take_svid_list(self, spiffe_id: str, audience: tuple[str, ...]
                       ) -> tuple[SvidEntry, ...] | None:
        """The replacement answer for one FetchJWTSVID call (consuming one of its `times`),
        or None to answer honestly."""
        with self._lock:
            replacement = self._list_replacement
            if replacement is not None and self._list_left is not None:
                self._list_left -= 1
                if self._list_left == 0:
                    self._list_replacement = None
                    self._list_left = None
        if replacement is None:
            return None
        entries = replacement(spiffe_id, audience) if callable(replacement) else replacement
        return tuple(entries)

    def replace_bundles(self, bundles: Mapping[str, bytes] | None) -> None:
        """Stream `bundles` (trust-domain key -> raw JWKS bytes, sent unchecked) instead of
        the authorities' bundles; None goes back to the honest ones. Open FetchJWTBundles
        streams are sent the new map at once."""
        with self._lock:
            self._bundles = None if bundles is None else dict(bundles)
        self._on_bundles_change()

    def bundle_replacement(self) -> dict[str, bytes] | None:
        """The bundle map to send instead of the honest one, or None."""
        with self._lock:
            return None if self._bundles is None else dict(self._bundles)

    def reset(self) -> None:
        """Forget every switch, including SVID and bundle replacement."""
        with self._lock:
            self._replacement = None
            self._replacement_left = None
            self._list_replacement = None
            self._list_left = None
            bundles_replaced = self._bundles is not None
            self._bundles = None
        super().reset()
        if bundles_replaced:
            self._on_bundles_change()


def _check_times(times: int | None) -> None:
    if times is not None and times < 1:
        raise ValueError(f"times must be positive, got {times}")
