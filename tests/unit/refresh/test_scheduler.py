"""The refresh loop on a virtual clock: timing, backoff, last-good serving, expiry."""

from __future__ import annotations

import asyncio
import random
import threading
from collections.abc import Callable

import pytest
from prometheus_client import CollectorRegistry

from bridge.clouds.aws import MIN_REMAINING as AWS_MIN_REMAINING
from bridge.clouds.aws import AwsCredentials, AwsHopConfig
from bridge.config import TargetConfig
from bridge.errors import ExchangeError, SourceError
from bridge.logs import Redactor
from bridge.metrics import Metrics
from bridge.model import JwtSvid, Material, State
from bridge.refresh.limits import Limits
from bridge.refresh.pipeline import TargetPipeline
from bridge.refresh.policy import Policy
from bridge.refresh.scheduler import Scheduler
from bridge.store import CredentialStore
from bridge.testing import FakeClock

LIFETIME = 3600.0


class ScriptedSource:
    """Mints SVIDs on the fake clock; can be told to fail."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.calls = 0
        self.fail_with: SourceError | None = None

    def fetch(self, audience: str, spiffe_id: str | None, judge: str | None = None) -> JwtSvid:
        self.calls += 1
        if self.fail_with:
            raise self.fail_with
        now = self.clock.time()
        return JwtSvid(spiffe_id="spiffe://example.org/w", audience=audience,
                       expires_at=now + 300, issued_at=now, token=f"eyJ.token.{self.calls}",
                       deadline=self.clock.monotonic() + 300)

    def jwt_bundles(self) -> None:
        return None

    def close(self) -> None:
        pass


class ScriptedHop:
    """Returns credentials living LIFETIME seconds, or raises what the script says."""

    name = "aws_web_identity"
    scope = "aws_sts us-east-1"
    judge = "aws_sts"

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.calls = 0
        self.tokens: list[str] = []
        self.errors: list[ExchangeError] = []
        self.fail_always: ExchangeError | None = None
        self.gate: Callable[[], None] | None = None

    def exchange(self, svid: Material) -> AwsCredentials:
        assert isinstance(svid, JwtSvid)
        self.calls += 1
        self.tokens.append(svid.token)
        if self.gate:
            self.gate()
        if self.errors:
            raise self.errors.pop(0)
        if self.fail_always:
            raise self.fail_always
        return AwsCredentials(access_key_id=f"ASIA{self.calls:016d}", secret_access_key="s" * 40,
                              session_token="t" * 100, expires_at=self.clock.time() + LIFETIME)


def _target(name: str = "t") -> TargetConfig:
    return TargetConfig(name=name, audience="sts.amazonaws.com",
                        hops=(AwsHopConfig(role_arn="arn:aws:iam::111122223333:role/r",
                                           region="us-east-1"),))


def _throttled() -> ExchangeError:
    return ExchangeError("slow down", hop="aws_web_identity", code="Throttling",
                         retryable=True, reason="throttled")


def _denied() -> ExchangeError:
    return ExchangeError("Not authorized", hop="aws_web_identity", code="AccessDenied",
                         retryable=False, reason="access_denied")


class Rig:
    def __init__(self, names: tuple[str, ...] = ("t",), concurrency: int = 32) -> None:
        self.clock = FakeClock()
        self.source = ScriptedSource(self.clock)
        self.hop = ScriptedHop(self.clock)
        self.store = CredentialStore(names)
        self.registry = CollectorRegistry()
        self.metrics = Metrics(self.registry)
        limits = Limits(concurrency)  # per endpoint: every target here calls the same one
        self.pipelines = [TargetPipeline(_target(n), source=self.source, hops=[self.hop],
                                         monotonic=self.clock.monotonic, now=self.clock.time,
                                         limits=limits)
                          for n in names]
        self.scheduler = Scheduler(self.pipelines, store=self.store, clock=self.clock,
                                   metrics=self.metrics, redactor=Redactor(),
                                   policy=Policy(min_remaining=AWS_MIN_REMAINING),
                                   rng=random.Random(7))

    def sample(self, name: str, labels: dict[str, str] | None = None) -> float | None:
        return self.metrics.sample(name, **(labels or {}))


async def _running(rig: Rig) -> asyncio.Task[None]:
    task = asyncio.create_task(rig.scheduler.run())
    await rig.clock.settle()
    return task


async def test_first_refresh_is_immediate_and_the_next_at_about_half_life() -> None:
    """Refresh at start, then not before 45 % nor after 55 % of the lifetime."""
    rig = Rig()
    task = await _running(rig)
    assert rig.hop.calls == 1
    assert rig.store.get("t").state is State.FRESH  # type: ignore[union-attr]
    await rig.clock.advance(LIFETIME * 0.45 - 1)
    assert rig.hop.calls == 1
    await rig.clock.advance(LIFETIME * 0.10 + 2)
    assert rig.hop.calls == 2
    task.cancel()


async def test_every_exchange_uses_a_newly_fetched_svid() -> None:
    """The bridge never caches JWT-SVIDs: one fetch per exchange."""
    rig = Rig()
    task = await _running(rig)
    await rig.clock.advance(LIFETIME * 2)
    assert rig.hop.calls >= 3
    assert len(set(rig.hop.tokens)) == rig.hop.calls == rig.source.calls
    task.cancel()


async def test_transient_failures_back_off_doubling_from_one_second_to_the_cap() -> None:
    """Throttling retries at ~1, 2, 4, ... s (75-100 % of each step), capped at 300 s."""
    rig = Rig()
    rig.hop.fail_always = _throttled()
    task = await _running(rig)
    await rig.clock.advance(3000)
    retries = list(rig.clock.sleeps)
    assert len(retries) >= 8
    for i, delay in enumerate(retries[:8]):
        nominal = min(300.0, 2.0 ** i)
        assert 0.75 * nominal <= delay <= nominal, (i, delay)
    assert max(retries) <= 300.0
    assert rig.store.get("t").state is State.EXPIRED  # type: ignore[union-attr]
    assert rig.sample("spiffe_bridge_refresh_failures_total",
                      {"target": "t", "stage": "aws_web_identity", "reason": "throttled"}
                      ) == rig.hop.calls
    task.cancel()


async def test_backoff_resets_after_a_success() -> None:
    """After recovering, a later failure starts again from about one second."""
    rig = Rig()
    rig.hop.errors = [_throttled()] * 5
    task = await _running(rig)
    await rig.clock.advance(60)
    assert rig.store.get("t").state is State.FRESH  # type: ignore[union-attr]
    rig.clock.sleeps.clear()
    rig.hop.errors = [_throttled()]
    await rig.clock.advance(LIFETIME * 0.56)
    retries = list(rig.clock.sleeps)
    assert any(0.75 <= s <= 1.0 for s in retries), retries
    task.cancel()


async def test_stale_serves_last_good_until_real_expiry_then_expired() -> None:
    """An outage longer than the lifetime: stale while valid, expired exactly at expiry."""
    rig = Rig()
    task = await _running(rig)
    first = rig.store.get("t").credential  # type: ignore[union-attr]
    assert first is not None
    rig.hop.fail_always = _throttled()
    await rig.clock.advance(LIFETIME * 0.6)
    status = rig.store.get("t")
    assert status is not None
    assert status.state is State.STALE
    assert status.credential == first
    assert rig.sample("spiffe_bridge_credential_state", {"target": "t", "state": "stale"}) == 1
    await rig.clock.advance(first.expires_at - rig.clock.time() - 1)
    assert rig.store.get("t").credential == first  # type: ignore[union-attr]
    await rig.clock.advance(2)
    status = rig.store.get("t")
    assert status is not None
    assert status.state is State.EXPIRED
    assert status.credential is None
    assert rig.sample("spiffe_bridge_credential_state", {"target": "t", "state": "expired"}) == 1
    rig.hop.fail_always = None
    await rig.clock.advance(301)
    assert rig.store.get("t").state is State.FRESH  # type: ignore[union-attr]
    task.cancel()


async def test_retries_never_wait_past_the_hand_out_deadline() -> None:
    """With a good credential held, backoff is cut short so it is replaced before 15 min left."""
    rig = Rig()
    task = await _running(rig)
    first = rig.store.get("t").credential  # type: ignore[union-attr]
    assert first is not None
    rig.hop.fail_always = _throttled()
    deadline = first.expires_at - AWS_MIN_REMAINING
    attempts_before = rig.hop.calls
    await rig.clock.advance(deadline - rig.clock.time() + 0.5)
    assert rig.hop.calls > attempts_before + 5
    task.cancel()


async def test_permanent_failure_waits_at_the_cap_and_raises_the_alarm() -> None:
    """AccessDenied is not hammered: the next try is minutes away; the alarm metric is 1."""
    rig = Rig()
    rig.hop.fail_always = _denied()
    task = await _running(rig)
    await rig.clock.advance(200)
    assert rig.hop.calls == 1
    assert rig.sample("spiffe_bridge_permanent_failure", {"target": "t"}) == 1
    status = rig.store.get("t")
    assert status is not None
    assert status.last_error == "access_denied"
    await rig.clock.advance(200)
    assert rig.hop.calls == 2
    task.cancel()


async def test_invalid_token_is_retried_at_once_with_a_fresh_svid() -> None:
    """InvalidIdentityToken: a new SVID is fetched and the exchange succeeds in one refresh."""
    rig = Rig()
    rig.hop.errors = [ExchangeError("bad token", hop="aws_web_identity",
                                    code="InvalidIdentityToken", retryable=True,
                                    reason="invalid_token", fresh_svid=True)]
    task = await _running(rig)
    assert rig.store.get("t").state is State.FRESH  # type: ignore[union-attr]
    assert rig.source.calls == 2
    assert rig.hop.tokens[0] != rig.hop.tokens[1]
    assert rig.sample("spiffe_bridge_refresh_total", {"target": "t", "result": "failure"}) == 0
    task.cancel()


async def test_workload_api_failures_are_classified_at_the_svid_stage() -> None:
    """An unavailable agent is a retryable svid-stage failure; no exchange is attempted."""
    rig = Rig()
    rig.source.fail_with = SourceError("agent down", retryable=True, reason="unavailable")
    task = await _running(rig)
    assert rig.hop.calls == 0
    assert rig.sample("spiffe_bridge_refresh_failures_total",
                      {"target": "t", "stage": "svid", "reason": "unavailable"}) == 1
    rig.source.fail_with = None
    await rig.clock.advance(2)
    assert rig.store.get("t").state is State.FRESH  # type: ignore[union-attr]
    task.cancel()


async def test_concurrency_is_bounded_across_targets() -> None:
    """With concurrency 2, never more than two exchanges are in flight."""
    names = tuple(f"t{i}" for i in range(6))
    rig = Rig(names, concurrency=2)
    lock = threading.Lock()
    in_flight = [0, 0]
    release = threading.Event()

    def gate() -> None:
        with lock:
            in_flight[0] += 1
            in_flight[1] = max(in_flight[1], in_flight[0])
        release.wait(5)
        with lock:
            in_flight[0] -= 1

    rig.hop.gate = gate
    task = asyncio.create_task(rig.scheduler.refresh_all_once())
    for _ in range(500):  # until two are in (bounded: 5 s), then give a third the chance
        if in_flight[0] >= 2:
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.2)
    release.set()
    statuses = await task
    assert in_flight[1] == 2
    assert all(s.state is State.FRESH for s in statuses)


@pytest.mark.parametrize("skew", [-300.0, 300.0], ids=["behind-5m", "ahead-5m"])
async def test_wall_clock_steps_do_not_break_scheduling(skew: float) -> None:
    """A ±5 min wall-clock step: the loop keeps refreshing on monotonic time."""
    rig = Rig()
    task = await _running(rig)
    rig.clock.skew(skew)
    await rig.clock.advance(LIFETIME * 1.2)
    assert rig.hop.calls >= 3
    assert rig.store.get("t").state is State.FRESH  # type: ignore[union-attr]
    task.cancel()
