"""Each workload's credential under each rule: minted on first request, refreshed while
the workload lives and asks, dropped when idle or gone.

Every request is attested afresh: the caller's PID goes to the SPIRE agent's Broker
API (`sources.broker`), the agent answers with that process's JWT-SVIDs, and the caller
is checked to be the same live process after the answer (`serving.processes`). Only
then is the identity's credential looked up, keyed by (SPIFFE ID, rule): two processes
of one identity share one credential, and no request can name another's.

- first request: the exchange (the rule rendered for the ID, `config.workloads`) runs
  once per key (single-flight: concurrent first requests wait on the same mint), the
  callers waiting at most until their own deadline;
- refresh: a task per key, at the refresh policy's times (`refresh.policy`), with an
  SVID fetched through the broker for a live process of that identity; it stops, and
  the key is dropped, after `workloads.idle` without a request or when no process
  that asked for it is alive any more;
- bound: at most `workloads.max_identities` keys; past it a new key is refused
  (RESOURCE_EXHAUSTED-like `WorkloadError`) and `workload_identity_limit_total` counts it.

Broker-less mode (`get_with_token`, for agents without the broker endpoint): the caller
presents its own JWT-SVID for the rule's audience; it is verified like a gRPC caller's
(`serving.grpc.callers.CallerVerifier`: signature against the bundle, exp, audience
exactly the rule's, so a token for anything else is refused, never forwarded) and is
what the exchange is fed, so the cloud's `sub` is the caller's. The result is kept per
identity until it nears the cloud's hand-out window; there is no background refresh
(no way to fetch a fresh SVID): the next request with a fresh token mints again.

Nothing per workload reaches a metric label: rule names and fixed words only.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from bridge import jwt_svid
from bridge.clock import Clock
from bridge.clouds import CloudSession, cloud_of
from bridge.clouds.chain import build_hops
from bridge.config import TargetConfig
from bridge.config.workloads import WorkloadRule
from bridge.errors import BridgeError, ConfigError, SourceError
from bridge.logs import Redactor
from bridge.metrics import Metrics
from bridge.model import JwtSvid, TargetStatus
from bridge.refresh.budget import Budgets
from bridge.refresh.limits import Limits
from bridge.refresh.pipeline import TargetPipeline, Timings
from bridge.refresh.policy import Policy
from bridge.serving.grpc.callers import CallerRejected, CallerVerifier
from bridge.serving.processes import CallerProcess, start_time
from bridge.store import CredentialStore

log = logging.getLogger(__name__)
SWEEP = 5.0  # seconds between checks for idle and gone workloads
SVID_MARGIN = 30.0  # an SVID kept from the request is used for the mint only with this left


class WorkloadError(BridgeError):
    """A workload's request cannot be answered. `kind` maps to a gRPC code / HTTP
    status: denied | not_found | unavailable | exhausted | failed | timeout."""

    prefix = "workload"

    def __init__(self, detail: str, *, kind: str, reason: str) -> None:
        super().__init__(detail, retryable=kind in {"unavailable", "timeout"}, reason=reason)
        self.kind = kind


class Broker(Protocol):
    """What the lifecycle needs of `sources.broker.BrokerClient`."""

    def fetch(self, pid: int, audience: str, *, deadline: float) -> list[JwtSvid]: ...


@dataclass(frozen=True, slots=True)
class Granted:
    """A caller's answer: whose identity, under which rule, and its status."""

    rule: WorkloadRule
    spiffe_id: str
    status: TargetStatus
    target: TargetConfig | None = None  # the rule rendered for this identity


@dataclass
class _Entry:
    key: tuple[str, str]
    rule: WorkloadRule
    pipeline: TargetPipeline
    store: CredentialStore
    last_asked: float
    pids: dict[int, str] = field(default_factory=dict)  # pid -> start time, who asked
    svid: JwtSvid | None = None  # the SVID of the latest request, for the first mint
    first: asyncio.Future[TargetStatus] | None = None
    task: asyncio.Task[None] | None = None
    presented: bool = False  # broker-less: fed by callers' own tokens, no process to track

    @property
    def status(self) -> TargetStatus:
        status = self.store.get(self.rule.name)
        assert status is not None
        return status


class WorkloadCredentials:
    """The per-workload lifecycle (see the module docstring). Runs on the daemon's loop."""

    def __init__(self, rules: Sequence[WorkloadRule], *, broker: Broker | None,
                 sessions: Callable[[str], CloudSession], clock: Clock, metrics: Metrics,
                 redactor: Redactor, limits: Limits, idle: float, max_identities: int,
                 rng: random.Random | None = None,
                 verifiers: Mapping[str, CallerVerifier] | None = None,
                 budgets: Budgets | None = None) -> None:
        self.rules: Mapping[str, WorkloadRule] = {r.name: r for r in rules}
        self._verifiers = verifiers or {}  # rule -> the verifier for its audience
        self._budgets = budgets  # the fleet's quota budgets: workloads share the STS quotas
        self._broker = broker
        self._sessions = sessions
        self._clock = clock
        self._metrics = metrics
        self._redactor = redactor
        self._limits = limits
        self._idle = idle
        self._max = max_identities
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography
        self._entries: dict[tuple[str, str], _Entry] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        with contextlib.suppress(RuntimeError):  # built in its loop: adopted listeners
            self._loop = asyncio.get_running_loop()  # of a reload may ask at once
        for rule in rules:
            metrics.workload_identities.labels(rule.name).set(0)
            metrics.workload_limit.labels(rule.name)
            for result in ("ok", "denied", "unavailable", "limit", "failed"):
                metrics.workload_requests.labels(rule.name, result)

    @property
    def live(self) -> int:
        return len(self._entries)

    # -- requests -----------------------------------------------------------------------

    def submit(self, caller: CallerProcess, rule: str, *,
               timeout: float) -> concurrent.futures.Future[Granted]:
        """`get` from another thread (gRPC's loop, the HTTP endpoints' workers)."""
        loop = self._loop
        if loop is None or loop.is_closed():
            raise WorkloadError("the bridge is not running", kind="unavailable",
                                reason="unavailable")
        return asyncio.run_coroutine_threadsafe(self.get(caller, rule, timeout=timeout), loop)

    def get_blocking(self, caller: CallerProcess, rule: str, *, timeout: float) -> Granted:
        """`submit` and wait (a worker thread), at most `timeout` and a second."""
        future = self.submit(caller, rule, timeout=timeout)
        try:
            return future.result(timeout + 1.0)
        except TimeoutError:
            future.cancel()
            raise WorkloadError("no answer within the request's deadline", kind="timeout",
                                reason="timeout") from None

    async def get(self, caller: CallerProcess, rule_name: str, *, timeout: float) -> Granted:
        """The caller's own credential under `rule_name` (waits for a first mint, at most
        `timeout` seconds). Raises WorkloadError."""
        rule = self.rules.get(rule_name)
        if rule is None:
            raise WorkloadError(f"no workload target {rule_name}", kind="not_found",
                                reason="no_rule")
        try:
            granted = await self._get(caller, rule, timeout)
        except WorkloadError as exc:
            result = {"denied": "denied", "not_found": "denied", "exhausted": "limit",
                      "unavailable": "unavailable", "timeout": "unavailable"}.get(
                          exc.kind, "failed")
            self._metrics.workload_requests.labels(rule.name, result).inc()
            raise
        self._metrics.workload_requests.labels(rule.name, "ok").inc()
        return granted

    async def _get(self, caller: CallerProcess, rule: WorkloadRule, timeout: float) -> Granted:
        mono = self._clock.monotonic
        deadline = mono() + timeout
        if self._broker is None:
            raise WorkloadError("no `broker` is configured: present your own JWT-SVID for "
                                f"audience {rule.audience!r} as the bearer token",
                                kind="denied", reason="no_token")
        if not caller.still_there():
            raise WorkloadError("the calling process is gone (or not visible to the "
                                "bridge)", kind="denied", reason="caller_gone")
        try:
            svids = await asyncio.to_thread(self._broker.fetch, caller.pid, rule.audience,
                                            deadline=deadline)
        except SourceError as exc:
            raise _from_source(exc) from None
        if not caller.still_there():  # exited or replaced while the agent attested it
            raise WorkloadError("the calling process exited during attestation",
                                kind="denied", reason="caller_gone")
        for svid in svids:
            values = rule.values(svid.spiffe_id)
            if values is not None:
                break
        else:
            raise WorkloadError(f"none of the caller's SPIFFE IDs matches workload target "
                                f"{rule.name}", kind="denied", reason="no_match")
        self._redactor.add(svid.token)
        entry = self._entry(rule, svid, values)
        entry.last_asked = mono()
        entry.pids[caller.pid] = caller.start or ""
        entry.svid = svid
        status = entry.status
        if status.valid_credential(mono()) is not None:
            return Granted(rule, svid.spiffe_id, status, entry.pipeline.target)
        return await self._first(entry, svid, deadline)

    def submit_token(self, token: str, rule: str, *,
                     timeout: float) -> concurrent.futures.Future[Granted]:
        """`get_with_token` from another thread."""
        loop = self._loop
        if loop is None or loop.is_closed():
            raise WorkloadError("the bridge is not running", kind="unavailable",
                                reason="unavailable")
        return asyncio.run_coroutine_threadsafe(
            self.get_with_token(token, rule, timeout=timeout), loop)

    async def get_with_token(self, token: str, rule_name: str, *,
                             timeout: float) -> Granted:
        """Broker-less: the credential of the identity whose JWT-SVID `token` is, under
        `rule_name` (see the module docstring). Raises WorkloadError."""
        rule = self.rules.get(rule_name)
        if rule is None:
            raise WorkloadError(f"no workload target {rule_name}", kind="not_found",
                                reason="no_rule")
        try:
            granted = await self._with_token(token, rule, timeout)
        except WorkloadError as exc:
            result = {"denied": "denied", "exhausted": "limit", "unavailable": "unavailable",
                      "timeout": "unavailable"}.get(exc.kind, "failed")
            self._metrics.workload_requests.labels(rule.name, result).inc()
            raise
        self._metrics.workload_requests.labels(rule.name, "ok").inc()
        return granted

    async def _with_token(self, token: str, rule: WorkloadRule, timeout: float) -> Granted:
        mono = self._clock.monotonic
        deadline = mono() + timeout
        verifier = self._verifiers.get(rule.name)
        if verifier is None:
            raise WorkloadError("this bridge takes no tokens for workload targets",
                                kind="denied", reason="no_token")
        try:
            spiffe_id = verifier.verify(token)
        except CallerRejected as exc:
            raise WorkloadError(str(exc), kind="unavailable" if exc.unavailable else "denied",
                                reason="invalid_token") from None
        values = rule.values(spiffe_id)
        if values is None:
            raise WorkloadError(f"{spiffe_id} does not match workload target {rule.name}",
                                kind="denied", reason="no_match")
        self._redactor.add(token)
        claims = jwt_svid.unverified_claims(token)
        now = self._clock.time()
        left = float(claims["exp"]) - now
        issued = claims.get("iat")
        svid = JwtSvid(spiffe_id=spiffe_id, audience=rule.audience, expires_at=now + left,
                       issued_at=float(issued) if isinstance(issued, int) else now,
                       token=token, deadline=mono() + left)
        entry = self._entry(rule, svid, values)
        entry.presented = True
        entry.last_asked = mono()
        status = entry.status
        held = status.valid_credential(mono())
        policy = Policy(min_remaining=cloud_of(entry.pipeline.target.final).min_remaining)
        if held is not None and held.remaining(mono()) > policy.min_remaining + 60.0:
            return Granted(rule, spiffe_id, status, entry.pipeline.target)
        entry.svid = svid
        return await self._first(entry, svid, deadline, once=True)

    async def _first(self, entry: _Entry, svid: JwtSvid, deadline: float, *,
                     once: bool = False) -> Granted:
        """Wait for the entry's (single-flight) mint, at most until `deadline`."""
        mono = self._clock.monotonic
        rule = entry.rule
        status = entry.status
        if not once and status.last_error_permanent and status.credential is None:
            raise WorkloadError(f"the exchange for {svid.spiffe_id} under {rule.name} "
                                f"failed: {status.last_error_detail}", kind="failed",
                                reason=status.last_error or "failed")
        first = entry.first
        if first is None or first.done():
            first = entry.first = asyncio.get_running_loop().create_future()
            if entry.task is None or entry.task.done():
                entry.task = asyncio.create_task(
                    self._mint_once(entry) if once else self._run(entry),
                    name=f"workload:{rule.name}")
        try:
            async with asyncio.timeout(max(0.0, deadline - mono())):
                status = await asyncio.shield(first)
        except TimeoutError:
            raise WorkloadError("the first credential was not ready within the request's "
                                "deadline", kind="timeout", reason="timeout") from None
        if status.valid_credential(mono()) is None:
            kind = "unavailable" if not status.last_error_permanent else "failed"
            raise WorkloadError(f"the exchange for {svid.spiffe_id} under {rule.name} "
                                f"failed ({status.last_error}): {status.last_error_detail}",
                                kind=kind, reason=status.last_error or "failed")
        return Granted(rule, svid.spiffe_id, status, entry.pipeline.target)

    def _entry(self, rule: WorkloadRule, svid: JwtSvid, values: dict[str, str]) -> _Entry:
        key = (svid.spiffe_id, rule.name)
        entry = self._entries.get(key)
        if entry is not None:
            return entry
        if len(self._entries) >= self._max:
            self._metrics.workload_limit.labels(rule.name).inc()
            log.warning("workload identity limit (%d) reached: refused a new one under %s",
                        self._max, rule.name)
            raise WorkloadError(f"the bridge holds its limit of {self._max} workload "
                                "identities (workloads.max_identities)", kind="exhausted",
                                reason="limit")
        try:
            target = rule.target_for(values)
        except ConfigError as exc:
            raise WorkloadError(f"workload target {rule.name} rendered for "
                                f"{svid.spiffe_id} is not valid: {exc.detail}",
                                kind="failed", reason="rule_render") from None
        sessions = {hop.cloud: self._sessions(hop.cloud) for hop in target.hops}
        holder: list[_Entry] = []
        source = _EntrySource(self._broker, lambda: holder[0], self._clock)
        pipeline = TargetPipeline(target, source=source, hops=build_hops(target.hops, sessions),
                                  monotonic=self._clock.monotonic, now=self._clock.time,
                                  limits=self._limits, budgets=self._budgets)
        entry = _Entry(key=key, rule=rule, pipeline=pipeline,
                       store=CredentialStore([rule.name]), last_asked=self._clock.monotonic())
        holder.append(entry)
        self._entries[key] = entry
        self._metrics.workload_identities.labels(rule.name).set(self._count(rule.name))
        return entry

    # -- lifecycle ----------------------------------------------------------------------

    async def run(self) -> None:
        """Sweep for idle and gone workloads until cancelled; then stop every refresh."""
        self._loop = asyncio.get_running_loop()
        warm = getattr(self._broker, "warm", None)
        if callable(warm):  # connect to the agent before the first workload asks
            asyncio.get_running_loop().run_in_executor(None, warm)
        try:
            while True:
                await asyncio.sleep(SWEEP)
                self.sweep()
        finally:
            for entry in list(self._entries.values()):
                self._drop(entry, None)

    def bind(self) -> None:
        """Record the running loop (for `submit`) without sweeping."""
        self._loop = asyncio.get_running_loop()

    def sweep(self) -> None:
        now = self._clock.monotonic()
        for entry in list(self._entries.values()):
            if now - entry.last_asked > self._idle:
                self._drop(entry, "idle")
            elif entry.presented:
                continue  # broker-less: no process to follow, only idleness
            elif not _alive(entry):
                self._drop(entry, "gone")

    def _drop(self, entry: _Entry, reason: str | None) -> None:
        if self._entries.get(entry.key) is not entry:
            return
        del self._entries[entry.key]
        if entry.task is not None:
            entry.task.cancel()
        if entry.first is not None and not entry.first.done():
            entry.first.cancel()
        if reason is not None:
            self._metrics.workload_dropped.labels(entry.rule.name, reason).inc()
            log.info("dropped workload identity under %s (%s)", entry.rule.name, reason)
        self._metrics.workload_identities.labels(entry.rule.name).set(
            self._count(entry.rule.name))

    def _count(self, rule: str) -> int:
        return sum(1 for key in self._entries if key[1] == rule)

    async def _mint_once(self, entry: _Entry) -> None:
        """Broker-less: one exchange with the presented token, no refresh after it."""
        status = await self._refresh(entry)
        if entry.first is not None and not entry.first.done():
            entry.first.set_result(status)

    async def _run(self, entry: _Entry) -> None:
        """Mint, then refresh at the policy's times, until dropped (cancelled)."""
        policy = Policy(min_remaining=cloud_of(entry.pipeline.target.final).min_remaining)
        failures = 0
        while True:
            status = await self._refresh(entry)
            if entry.first is not None and not entry.first.done():
                entry.first.set_result(status)
            now = self._clock.monotonic()
            c = status.valid_credential(now)
            if status.consecutive_failures == 0 and c is not None:
                failures = 0
                delay = policy.next_refresh(issued_at=c.received, expires_at=c.deadline,
                                            now=now, jitter=self._rng.uniform(-1.0, 1.0))
            else:
                failures += 1
                if status.last_error_permanent and c is None:
                    # nothing to serve and no retry will help: the callers were told
                    self._drop(entry, "failed")
                    return
                delay = policy.retry_delay(
                    failures=failures, permanent=status.last_error_permanent,
                    jitter=self._rng.random(), now=now,
                    replace_by=c.deadline - policy.min_remaining if c else None)
            await self._clock.sleep(delay)
            if not _alive(entry):
                self._drop(entry, "gone")
                return

    async def _refresh(self, entry: _Entry) -> TargetStatus:
        name = entry.rule.name
        timings = Timings()
        try:
            async with asyncio.timeout(120.0):
                credential, _ = await entry.pipeline.refresh(timings)
        except (BridgeError, TimeoutError) as exc:
            retryable = exc.retryable if isinstance(exc, BridgeError) else True
            reason = exc.reason if isinstance(exc, BridgeError) else "timeout"
            detail = str(exc) if isinstance(exc, BridgeError) else "the exchange timed out"
            self._metrics.workload_refresh.labels(name, "failure").inc()
            log.warning("workload credential under %s failed (%s): %s", name, reason, detail)
            return entry.store.failed(name, reason, detail, self._clock.monotonic(),
                                      permanent=not retryable)
        self._redactor.add(*credential.secrets())
        self._metrics.workload_refresh.labels(name, "success").inc()
        credential = credential.in_terms_of(self._clock.time() - self._clock.monotonic())
        return entry.store.succeeded(name, credential, self._clock.time())


class _EntrySource:
    """The SvidSource of one workload key: the request's own SVID for the first mint,
    then a fresh one through the broker for a live process of that identity."""

    def __init__(self, broker: Broker | None, entry: Callable[[], _Entry],
                 clock: Clock) -> None:
        self._broker = broker
        self._entry = entry
        self._clock = clock

    def fetch(self, audience: str, spiffe_id: str | None, judge: str | None = None) -> JwtSvid:
        entry = self._entry()
        held, entry.svid = entry.svid, None
        if held is not None and held.audience == audience and (
                held.deadline - self._clock.monotonic() > SVID_MARGIN):
            return held
        spiffe_id = entry.key[0]
        if self._broker is None:
            raise SourceError(f"no fresh JWT-SVID of {spiffe_id} (broker-less: the caller "
                              "presents one)", retryable=False, reason="no_token")
        deadline = self._clock.monotonic() + 30.0
        for pid, start in list(entry.pids.items()):
            if start_time(pid) != start:
                entry.pids.pop(pid, None)
                continue
            try:
                svids = self._broker.fetch(pid, audience, deadline=deadline)
            except SourceError as exc:
                if exc.retryable:
                    raise
                entry.pids.pop(pid, None)  # that process lost the identity
                continue
            if start_time(pid) != start:  # replaced during the call: its answer is void
                entry.pids.pop(pid, None)
                continue
            for svid in svids:
                if svid.spiffe_id == spiffe_id:
                    return svid
            entry.pids.pop(pid, None)
        raise SourceError(f"no live process holds {spiffe_id} any more", retryable=False,
                          reason="workload_gone")

    def jwt_bundles(self) -> None:
        return None

    def close(self) -> None:
        return None


def _alive(entry: _Entry) -> bool:
    """Some process that asked for this key is still the same process."""
    for pid, start in list(entry.pids.items()):
        if start and start_time(pid) == start:
            return True
        entry.pids.pop(pid, None)
    return False


def _from_source(exc: SourceError) -> WorkloadError:
    if exc.retryable:
        return WorkloadError(f"the SPIRE agent's broker endpoint cannot answer now: "
                             f"{exc.detail}", kind="unavailable", reason=exc.reason)
    if exc.reason in {"no_identity", "attestation_failed", "no_pid"}:
        return WorkloadError(f"the SPIRE agent issues no identity to the calling process "
                             f"({exc.detail})", kind="denied", reason=exc.reason)
    return WorkloadError(exc.detail, kind="failed", reason=exc.reason)


__all__ = ["Broker", "Granted", "WorkloadCredentials", "WorkloadError"]
