"""The refresh loop: one task per target, timed by `policy`, on the monotonic clock.

Each target refreshes at a point of its credential's safe window that `spread` draws
(deterministic per node and target, see `spread`; at its wall-clock phase when the node
is numbered; without a spread, at about half its life)
and retries failures with jittered backoff. It takes the credential out of service at
its deadline, while waiting and while a refresh is queued or hanging alike, so nothing
expired is ever handed out and the state operators see is never `fresh` for an expired
credential. A refresh is
single-flight per target (only its own task refreshes it); concurrency is bounded per
remote endpoint by the pipelines' `Limits`, so one sick service cannot starve another.
When the Workload API answers again after failing, the targets it held back retry at
once (spread over a second or two) instead of sitting out their backoff.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
from collections.abc import Coroutine, Sequence
from typing import Any, TypeVar

from bridge.clock import Clock
from bridge.clouds import cloud_of
from bridge.config import TargetConfig
from bridge.errors import BridgeError, ExchangeError, PermanentFailureError, SourceError
from bridge.logs import Redactor
from bridge.metrics import Metrics
from bridge.model import Credential, JwtSvid, State, TargetStatus
from bridge.refresh import clock_steps
from bridge.refresh.clock_steps import StepWatcher
from bridge.refresh.pipeline import TargetPipeline, Timings
from bridge.refresh.policy import JWT_MIN_REMAINING, TRANSIENT_CAP, Policy
from bridge.refresh.spread import Spread
from bridge.store import CredentialStore
from bridge.x509_svid import X509Svid

JWT_SAME_SVID_WAIT = 15.0  # seconds between asks while the agent hands out the same SVID

log = logging.getLogger(__name__)
T = TypeVar("T")
HEARTBEAT = 5.0


class Scheduler:
    """Runs every target's refresh on the policy's clock; the only writer of the store."""

    def __init__(
        self,
        pipelines: Sequence[TargetPipeline],
        *,
        store: CredentialStore,
        clock: Clock,
        metrics: Metrics,
        redactor: Redactor,
        policy: Policy | None = None,
        rng: random.Random | None = None,
        deadline: float = 120.0,
        exit_on_permanent: bool = False,
        spread: Spread | None = None,
        budgeted: bool = False,
    ) -> None:
        self._pipelines = list(pipelines)
        self._store = store
        self._clock = clock
        self._metrics = metrics
        self._redactor = redactor
        # Budgets bound the call rate, so transient retries may cap lower (TRANSIENT_CAP):
        # a token service that comes back is seen within 30 s, not five minutes.
        cap = TRANSIENT_CAP if budgeted else None
        self._policies = {p.target.name: policy or _policy_for(p.target, cap)
                          for p in pipelines}
        self._jwt_policies = {p.target.name: _jwt_policy_for(p.target) for p in pipelines}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._source_back = asyncio.Event()  # set (and replaced) when the source recovers
        self._source_down = False
        self._held_by_source: set[str] = set()  # targets whose last failure was the SVID
        # `source: x509` targets: set when their SVID's leaf rotates (refresh at once),
        # and the leaf their current credential was made with.
        self._rotated: dict[str, asyncio.Event] = {
            p.target.name: asyncio.Event() for p in pipelines if p.x509 is not None}
        self._x509_pipelines = {p.target.name: p for p in pipelines if p.x509 is not None}
        self._made_with: dict[str, str] = {}
        for name in self._rotated:  # zeros from the start, so increase() sees the first
            metrics.x509_rotations.labels(name).inc(0)
        self._retry_after: dict[str, float] = {}  # a service's Retry-After, per target
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography
        self._deadline = deadline
        self._exit_on_permanent = exit_on_permanent
        self._spread = spread
        self.last_tick = clock.monotonic()
        for p in self._pipelines:
            carried = store.get(p.target.name)
            if carried is None or carried.credential is None:
                metrics.init_target(p.target.name)
            else:
                # Kept across a reload: its metrics stay as they were, never reset.
                metrics.set_state(p.target.name, carried.served_state(clock.monotonic()))
                metrics.expiry.labels(p.target.name).set(carried.credential.expires_at)
                if carried.last_success is not None:
                    metrics.last_success.labels(p.target.name).set(carried.last_success)

    def source_up(self, up: bool) -> None:
        """The Workload API answered (or failed): safe to call from any thread."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._source_changed, up)

    def _source_changed(self, up: bool) -> None:
        back = up and self._source_down
        self._source_down = not up
        if back:
            event, self._source_back = self._source_back, asyncio.Event()
            event.set()

    def svid_rotated(self, spiffe_ids: set[str]) -> None:
        """X.509-SVIDs rotated (by SPIFFE ID, "" the default): safe from any thread."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._wake_rotated, spiffe_ids)

    def _wake_rotated(self, spiffe_ids: set[str]) -> None:
        for name, event in self._rotated.items():
            if (self._x509_pipelines[name].target.spiffe_id or "") in spiffe_ids:
                event.set()

    def _rotation_due(self, name: str) -> bool:
        """Its SVID rotated since its credential was made (clears the wake-up)."""
        event = self._rotated.get(name)
        if event is None or not event.is_set():
            return False
        event.clear()
        p = self._x509_pipelines[name]
        source = p.x509
        now = source.current(p.target.spiffe_id) if source is not None else None
        return now is not None and now != self._made_with.get(name)

    async def run(self) -> None:
        """Refresh every target forever (until cancelled)."""
        self._loop = asyncio.get_running_loop()
        async with asyncio.TaskGroup() as group:
            group.create_task(self._heartbeat())
            group.create_task(self._watch_clock(), name="clock-steps")
            for p in self._pipelines:
                group.create_task(self._run_target(p), name=f"refresh:{p.target.name}")
                if p.target.jwt_file:
                    group.create_task(self._run_jwt(p), name=f"jwt:{p.target.name}")

    async def refresh_all_once(self) -> list[TargetStatus]:
        """One refresh of every target (and its JWT file), concurrently (`once`)."""
        async def one(p: TargetPipeline) -> TargetStatus:
            if p.target.jwt_file:
                await self._refresh_jwt(p)
            return await self.refresh(p)
        return list(await asyncio.gather(*(one(p) for p in self._pipelines)))

    async def refresh(self, p: TargetPipeline) -> TargetStatus:
        """One attempt for one target: update the store and the metrics, never raise."""
        name = p.target.name
        timings = Timings()
        start = self._clock.monotonic()
        try:
            # asyncio.timeout, not wait_for: on 3.11 wait_for swallows a cancel that
            # lands as the call returns (gh-86296), and SIGTERM would be ignored.
            held = self._store.get(name)
            replaced = held.credential if held else None
            valid = held.valid_credential(start) if held else None
            policy = self._policies[name]
            due = valid.deadline - policy.min_remaining if valid is not None else None
            # Holding nothing it may still hand out (lapsed, or inside the SDKs' window),
            # a chain may start from older kept material: a short-lived credential now
            # beats none (`TargetPipeline.refresh`).
            reuse_above = (policy.least_useful_life if due is None or due <= start
                           else None)
            async with asyncio.timeout(self._deadline):
                credential, svid = await self._expiring(name, p.refresh(
                    timings, due=due, reuse_above=reuse_above))
        except (BridgeError, TimeoutError) as exc:
            return self._failed(p, exc, timings)
        finally:
            timings.add("total", self._clock.monotonic() - start)
            for stage, seconds in timings.stages.items():
                self._metrics.refresh_duration.labels(stage).observe(seconds)
        self._redactor.add(*svid.secrets(), *credential.secrets())
        left = credential.remaining(self._clock.monotonic())
        if left < self._policies[name].min_lifetime:
            # Expired (or all but) on arrival: an issuer handing out spent credentials, or
            # a wrong clock with no Date to correct it. Not a success to refresh again at
            # once (a storm), a failure with its own reason and backoff.
            return self._failed(p, ExchangeError(
                f"the credential arrived with {left:.0f}s left, less than the "
                f"{self._policies[name].min_lifetime:.0f}s it takes to hand it out (is this "
                "host's clock ahead? check NTP)",
                hop="refresh", code="ShortLived", retryable=True, reason="short_lived"),
                timings)
        now = self._clock.time()
        # In the host clock's terms of now: a step during the exchange must not leave
        # its expiries in the old ones (the watcher may have re-dated the rest already).
        credential = credential.in_terms_of(now - self._clock.monotonic())
        self._held_by_source.discard(name)
        if replaced is not None:
            self._metrics.refresh_headroom.observe(
                max(0.0, replaced.remaining(self._clock.monotonic())))
        status = self._store.succeeded(name, credential, now)
        m = self._metrics
        m.refresh_total.labels(name, "success").inc()
        m.expiry.labels(name).set(credential.expires_at)
        m.last_success.labels(name).set(now)
        if isinstance(svid, X509Svid):
            self._made_with[name] = svid.fingerprint
            if p.target.x509_files:
                self._store.svid_updated(name, svid.in_terms_of(now - self._clock.monotonic()))
            m.x509_svid_expiry.labels(name).set(svid.expires_at)
        else:
            m.svid_expiry.labels(name).set(svid.expires_at)
        m.permanent_failure.labels(name).set(0)
        m.set_state(name, status.state)
        log.info("refreshed %s: valid for %.0fs (%s)", name, left,
                 ", ".join(f"{k} {v * 1000:.0f}ms" for k, v in timings.stages.items()),
                 extra={"fields": {"target": name, "event": "refresh", "result": "success",
                                   "expires_in": round(left),
                                   "stages": timings.stages}})
        return status

    def recovered(self, credential: Credential) -> None:
        """Serve a still-valid credential a previous run left (as stale until the first
        refresh replaces it): store, metrics and redactor in step."""
        self._redactor.add(*credential.secrets())
        status = self._store.recovered(credential.target, credential)
        self._metrics.set_state(credential.target, status.state)
        self._metrics.expiry.labels(credential.target).set(credential.expires_at)
        log.info("recovered a valid credential for %s from the previous run (%.0fs left)",
                 credential.target, credential.remaining(self._clock.monotonic()))

    async def _expiring(self, name: str, work: Coroutine[Any, Any, T]) -> T:
        """Await `work`, taking the held credential out of service at its deadline if
        `work` is still queued or running then (a hanging service must not leave an
        expired credential in the store, nor its state `fresh`)."""
        task = asyncio.ensure_future(work)
        sleeper: asyncio.Future[None] | None = None
        try:
            while True:
                status = self._store.get(name)
                c = status.credential if status else None
                left = c.remaining(self._clock.monotonic()) if c else None
                if left is not None and left <= 0:
                    self._expire(name)
                    continue
                if left is None:
                    return await task
                sleeper = asyncio.get_running_loop().create_task(
                    self._clock.sleep(left), name=f"expire:{name}")
                await asyncio.wait({task, sleeper}, return_when=asyncio.FIRST_COMPLETED)
                sleeper.cancel()
                if task.done():
                    return task.result()
        finally:
            if sleeper is not None:
                sleeper.cancel()
            if not task.done():
                task.cancel()

    def _failed(self, p: TargetPipeline, exc: BaseException, timings: Timings) -> TargetStatus:
        name = p.target.name
        stage, reason, retryable = _classify(exc)
        detail = str(exc) if isinstance(exc, BridgeError) else "refresh timed out"
        after = exc.retry_after if isinstance(exc, ExchangeError) else None
        if after:
            self._retry_after[name] = after
        else:
            self._retry_after.pop(name, None)
        status = self._store.failed(name, reason, detail, self._clock.monotonic(),
                                    permanent=not retryable)
        if stage == "svid":
            self._held_by_source.add(name)
        else:
            self._held_by_source.discard(name)
        m = self._metrics
        m.refresh_total.labels(name, "failure").inc()
        m.refresh_failures.labels(name, stage, reason).inc()
        m.permanent_failure.labels(name).set(0 if retryable else 1)
        m.set_state(name, status.state)
        level = logging.WARNING if retryable else logging.ERROR
        log.log(level, "refresh of %s failed at %s (%s, %s): %s; serving %s", name, stage,
                reason, "will retry" if retryable else "permanent: fix config or IAM", detail,
                "the last good credential" if status.credential else "nothing",
                extra={"fields": {"target": name, "event": "refresh", "result": "failure",
                                  "stage": stage, "reason": reason, "retryable": retryable,
                                  "stages": timings.stages}})
        return status

    async def _run_target(self, p: TargetPipeline) -> None:
        held = self._store.get(p.target.name)
        if held is not None and held.state is State.FRESH and held.valid_credential(
                self._clock.monotonic()):
            # Kept across a reload: refresh when it is due, not all at once now.
            await self._wait(p.target.name, self._next_delay(held))
        elif held is not None and self._spread is not None and self._recovered(held):
            # Left by a previous run: replaced within what is left of its safe window.
            c = held.credential
            assert c is not None
            await self._wait(p.target.name, self._spread.resume_in(
                self._policies[p.target.name], p.target.name, expires_at=c.deadline,
                now=self._clock.monotonic()))
        while True:
            status = await self.refresh(p)
            if status.last_error_permanent and self._exit_on_permanent:
                raise PermanentFailureError(
                    f"target {p.target.name} failed permanently ({status.last_error}): "
                    f"{status.last_error_detail}; exiting (refresh.exit_on_permanent_failure)",
                    reason=status.last_error or "permanent")
            await self._wait(p.target.name, self._next_delay(status))

    def _next_delay(self, status: TargetStatus) -> float:
        now = self._clock.monotonic()
        c = status.credential
        policy = self._policies[status.name]
        if status.consecutive_failures == 0 and c is not None and self._spread is not None:
            return self._spread.refresh_in(policy, status.name, issued_at=c.received,
                                           expires_at=c.deadline, now=now,
                                           wall_offset=self._clock.time() - now)
        if status.consecutive_failures == 0 and c is not None:
            return policy.next_refresh(issued_at=c.received, expires_at=c.deadline,
                                       now=now, jitter=self._rng.uniform(-1.0, 1.0))
        replace_by = c.deadline - policy.min_remaining if c else None
        if status.name in self._held_by_source:
            # The agent failed, not a budgeted call: no lower cap (its recovery wakes the
            # target at once anyway, `_wait`).
            policy = dataclasses.replace(policy, transient_cap=None)
        delay = policy.retry_delay(
            failures=max(1, status.consecutive_failures), permanent=status.last_error_permanent,
            jitter=self._rng.random(), now=now, replace_by=replace_by)
        # A service's Retry-After (Entra's 429/5xx) is honoured: sooner is refused anyway.
        return max(delay, min(self._retry_after.get(status.name, 0.0), policy.backoff_cap))

    def _recovered(self, status: TargetStatus) -> bool:
        """Whether `status` is a valid credential a previous run left, not yet refreshed."""
        return (status.state is State.STALE and status.consecutive_failures == 0
                and status.last_success is None
                and status.valid_credential(self._clock.monotonic()) is not None)

    async def _wait(self, name: str, delay: float) -> None:
        """Sleep `delay` seconds (monotonic), waking at the credential's expiry to drop it,
        and early when the Workload API comes back after holding this target back."""
        wake = self._clock.monotonic() + delay
        self._metrics.next_refresh.labels(name).set(self._clock.time() + delay)
        back = self._source_back
        rotated = self._rotated.get(name)
        while (left := wake - self._clock.monotonic()) > 0:
            if name in self._held_by_source and back.is_set():
                # Spread the retries of everything the outage held back over ~2 s.
                await self._clock.sleep(self._rng.uniform(0.0, 2.0))
                return
            if self._rotation_due(name):
                # A new X.509-SVID: what was signed with the old one is re-made now, so
                # a session never depends on a certificate the agent has replaced.
                self._metrics.x509_rotations.labels(name).inc()
                log.info("X.509-SVID of %s rotated: refreshing now", name)
                return
            status = self._store.get(name)
            c = status.credential if status else None
            until_expiry = c.remaining(self._clock.monotonic()) if c else None
            if until_expiry is not None and until_expiry <= 0:
                self._expire(name)
                continue
            nap = min(left, until_expiry) if until_expiry else left
            if name in self._held_by_source or rotated is not None:
                # The nap is this task's own (a virtual clock sees it parked under its name).
                task = asyncio.current_task()
                sleeper = asyncio.get_running_loop().create_task(
                    self._clock.sleep(nap), name=task.get_name() if task else None)
                wakers = [asyncio.ensure_future(e.wait()) for e in (
                    back if name in self._held_by_source else None, rotated) if e is not None]
                try:
                    await asyncio.wait({sleeper, *wakers}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    sleeper.cancel()
                    for waker in wakers:
                        waker.cancel()
            else:
                await self._clock.sleep(nap)

    def _expire(self, name: str) -> None:
        status = self._store.expire(name, self._clock.monotonic())
        self._metrics.set_state(name, status.state)
        log.error("credential for %s expired; it is no longer served", name)

    async def _run_jwt(self, p: TargetPipeline) -> None:
        failures = 0
        last: str | None = None
        warned: str | None = None
        while True:
            svid = await self._refresh_jwt(p)
            now = self._clock.monotonic()
            if svid is not None:
                failures = 0
                policy = self._jwt_policies[p.target.name]
                delay = policy.next_refresh(
                    issued_at=svid.deadline - (svid.expires_at - svid.issued_at),
                    expires_at=svid.deadline, now=now, jitter=self._rng.uniform(-1.0, 1.0))
                if svid.token == last and delay < JWT_SAME_SVID_WAIT:
                    # The agent still hands out the SVID we hold, and it has less left
                    # than the file must keep (an SVID TTL shorter than `check` was
                    # told): ask again at a walk, not every second.
                    if svid.deadline - now < policy.min_remaining and warned != svid.token:
                        warned = svid.token
                        log.warning("the JWT-SVID for %s has %.0fs left, less than the %.0fs "
                                    "its JWT file must keep: raise its TTL in SPIRE",
                                    p.target.name, svid.deadline - now, policy.min_remaining)
                    delay = JWT_SAME_SVID_WAIT
                last = svid.token
            else:
                failures += 1
                status = self._store.get(p.target.name)
                held = status.svid if status else None
                policy = self._jwt_policies[p.target.name]
                delay = policy.retry_delay(
                    failures=failures, permanent=False, jitter=self._rng.random(), now=now,
                    replace_by=held.deadline - policy.min_remaining if held else None)
            await self._clock.sleep(delay)

    async def _refresh_jwt(self, p: TargetPipeline) -> JwtSvid | None:
        """Fetch the SVID for the opt-in JWT file; failures keep the last file until expiry."""
        timings = Timings()
        try:
            async with asyncio.timeout(self._deadline):
                svid = await p.fetch_svid(timings)
        except (BridgeError, TimeoutError) as exc:
            _, reason, _ = _classify(exc)
            self._metrics.refresh_failures.labels(p.target.name, "svid", reason).inc()
            log.warning("JWT-SVID refresh for %s failed (%s)", p.target.name, reason)
            return None
        self._redactor.add(svid.token)
        svid = svid.in_terms_of(self._clock.time() - self._clock.monotonic())
        self._store.svid_updated(p.target.name, svid)
        self._metrics.svid_expiry.labels(p.target.name).set(svid.expires_at)
        return svid

    async def _watch_clock(self) -> None:
        """Re-date what is held when this host's wall clock steps (see clock_steps)."""
        watcher = StepWatcher(self._clock.time, self._clock.monotonic)
        while True:
            await asyncio.sleep(clock_steps.PERIOD)
            if watcher.step() is None:
                continue
            self._metrics.clock_steps.inc()
            self._store.redate(self._clock.time() - self._clock.monotonic())
            for name, status in self._store.snapshot().items():
                if status.credential is not None:
                    self._metrics.expiry.labels(name).set(status.credential.expires_at)
                if status.svid is not None:
                    self._metrics.svid_expiry.labels(name).set(status.svid.expires_at)

    async def _heartbeat(self) -> None:
        """Proves the event loop is alive (for /healthz), independent of refresh timing.

        Real time on purpose: liveness is about this process's loop, not the schedule.
        """
        while True:
            self.last_tick = self._clock.monotonic()
            await asyncio.sleep(HEARTBEAT)


def _policy_for(target: TargetConfig, transient_cap: float | None = None) -> Policy:
    """The hand-out window is the final cloud's SDKs' refresh window."""
    return Policy(min_remaining=cloud_of(target.final).min_remaining,
                  transient_cap=transient_cap)


def _jwt_policy_for(target: TargetConfig) -> Policy:
    """The JWT file's window: the engine's, or more where its reader caches it (the
    Azure federated token file)."""
    first = target.hops[0]
    return Policy(min_remaining=max(JWT_MIN_REMAINING,
                                    cloud_of(first).jwt_file_min_remaining(first)))


def _classify(exc: BaseException) -> tuple[str, str, bool]:
    """(stage, reason, retryable) for metrics labels: all bounded words."""
    if isinstance(exc, SourceError):
        return "svid", exc.reason, exc.retryable
    if isinstance(exc, ExchangeError):
        return exc.hop, exc.reason, exc.retryable
    if isinstance(exc, BridgeError):
        return "refresh", exc.reason, exc.retryable
    return "refresh", "timeout", True
