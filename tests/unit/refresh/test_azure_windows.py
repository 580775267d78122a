"""The refresh loop for Azure targets on a virtual clock: Entra's Retry-After is
honoured, and the federated token file never holds a token with less than
azure-identity's 600 s cache plus the margin."""

from __future__ import annotations

import asyncio
import random

import pytest
from prometheus_client import CollectorRegistry

from bridge.clouds.azure import FEDERATED_FILE_MIN, MIN_SVID_TTL, AzureHopConfig, AzureToken
from bridge.config import TargetConfig
from bridge.errors import ExchangeError
from bridge.logs import Redactor
from bridge.metrics import Metrics
from bridge.model import JwtSvid, Material
from bridge.refresh.pipeline import TargetPipeline
from bridge.refresh.scheduler import Scheduler
from bridge.store import CredentialStore
from bridge.testing import FakeClock

HOP = AzureHopConfig(tenant_id="72f988bf-86f1-41af-91ab-2d7cd011db47",
                     client_id="5e3ce6c0-2b1f-4285-8d4b-75ee78787346",
                     scope="https://storage.azure.com/.default", federated_token_file=True,
                     svid_ttl=MIN_SVID_TTL)


class AgentLikeSource:
    """Mints SVIDs of `ttl` and, like the SPIRE agent, hands out the cached one until
    less than half its lifetime is left."""

    def __init__(self, clock: FakeClock, ttl: float) -> None:
        self.clock, self.ttl, self.minted = clock, ttl, 0
        self._cached: JwtSvid | None = None

    def fetch(self, audience: str, spiffe_id: str | None, judge: str | None = None) -> JwtSvid:
        mono = self.clock.monotonic()
        c = self._cached
        if c is None or c.deadline - mono < self.ttl / 2:
            self.minted += 1
            now = self.clock.time()
            c = self._cached = JwtSvid("spiffe://example.org/demo", audience, now + self.ttl,
                                       now, f"eyJ.svid.{self.minted}",
                                       deadline=mono + self.ttl)
        return c

    def jwt_bundles(self) -> None:
        return None

    def close(self) -> None:
        pass


class EntraLike:
    name, scope, judge = "azure_entra", "azure_entra test", "azure"

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.errors: list[ExchangeError] = []

    def exchange(self, material: Material) -> AzureToken:
        if self.errors:
            raise self.errors.pop(0)
        return AzureToken(access_token="x" * 40, expires_at=self.clock.time() + 4500,
                          tenant_id=HOP.tenant_id, client_id=HOP.client_id,
                          resource=HOP.resource)


def _rig(ttl: float) -> tuple[FakeClock, Scheduler, WatchedStore, EntraLike]:
    clock = FakeClock()
    target = TargetConfig(name="az", audience=HOP.audience, hops=(HOP,), jwt_file=True)
    hop = EntraLike(clock)
    store = WatchedStore(("az",), clock)
    pipeline = TargetPipeline(target, source=AgentLikeSource(clock, ttl), hops=[hop],
                              monotonic=clock.monotonic, now=clock.time)
    scheduler = Scheduler([pipeline], store=store, clock=clock,
                          metrics=Metrics(CollectorRegistry()), redactor=Redactor(),
                          rng=random.Random(3))
    return clock, scheduler, store, hop


class WatchedStore(CredentialStore):
    """Records, whenever the JWT file's SVID is replaced, what the one before had left."""

    def __init__(self, names: tuple[str, ...], clock: FakeClock) -> None:
        super().__init__(names)
        self.clock = clock
        self.left_at_replacement: list[float] = []

    def svid_updated(self, name: str, svid: JwtSvid) -> None:
        held = self.get(name)
        if held is not None and held.svid is not None and held.svid.token != svid.token:
            self.left_at_replacement.append(held.svid.deadline - self.clock.monotonic())
        super().svid_updated(name, svid)


async def _least_left(ttl: float, hours: float) -> float:
    """The least time any JWT file content had left: what each had when replaced (its
    least), and what the last one has at the end."""
    clock, scheduler, store, _ = _rig(ttl)
    task = asyncio.create_task(scheduler.run())
    await clock.settle()
    await clock.advance(hours * 3600)
    assert isinstance(store, WatchedStore)
    status = store.get("az")
    assert status is not None
    assert status.svid is not None
    task.cancel()
    assert len(store.left_at_replacement) >= hours * 3600 / ttl  # it was rewritten
    return min([*store.left_at_replacement, status.svid.deadline - clock.monotonic()])


@pytest.mark.parametrize("ttl", [MIN_SVID_TTL, 3600.0, 4 * 3600.0])
async def test_federated_token_file_keeps_the_readers_cache_and_margin(ttl: float) -> None:
    """Over hours of rewrites, the file's token never has under 600 s + margin left."""
    assert await _least_left(ttl, 5) >= FEDERATED_FILE_MIN


async def test_a_short_svid_ttl_cannot_keep_it() -> None:
    """The control: with SPIRE's 15 min the same loop falls under (what `check` refuses)."""
    assert await _least_left(900.0, 2) < FEDERATED_FILE_MIN


async def test_entra_retry_after_is_honoured() -> None:
    """A 429 with Retry-After: 40 is not retried sooner, however early the backoff is."""
    clock, scheduler, store, hop = _rig(MIN_SVID_TTL)
    hop.errors = [ExchangeError("slow down", hop="azure_entra", code="AADSTS90055",
                                retryable=True, reason="throttled", retry_after=40.0)
                  for _ in range(3)]
    task = asyncio.create_task(scheduler.run())
    await clock.settle()
    await clock.advance(200)
    refresh_waits = [s for s in clock.sleeps if s >= 1][:3]
    assert all(s >= 40.0 for s in refresh_waits), clock.sleeps
    status = store.get("az")
    assert status is not None
    assert status.credential is not None
    task.cancel()


def test_retry_after_survives_the_chain_position_label() -> None:
    """A chain labels the error with its hop ("hop 3/3"); Retry-After stays with it."""
    err = ExchangeError("slow down", hop="azure_entra", code="AADSTS90055", retryable=True,
                        reason="throttled", retry_after=12.0).at(3, 3)
    assert (err.position, err.retry_after) == ("hop 3/3", 12.0)


async def test_a_huge_retry_after_waits_at_most_the_backoff_cap() -> None:
    """Retry-After: 86400 does not park a target for a day: the 5 min cap still holds."""
    clock, scheduler, _, hop = _rig(MIN_SVID_TTL)
    hop.errors = [ExchangeError("slow down", hop="azure_entra", code="AADSTS90055",
                                retryable=True, reason="throttled", retry_after=86400.0)]
    task = asyncio.create_task(scheduler.run())
    await clock.settle()
    await clock.advance(400)
    assert 300.0 in clock.sleeps  # the retry: exactly the cap, not sooner, not a day
    task.cancel()
