"""A chain's kept material after a later hop failed: young material is always started
from; older material only while the target holds nothing it may hand out (none, or one
inside the SDKs' window) and it leaves the policy's `least_useful_life` (an outage
longer than the lifetime must not make every GCP -> AWS chain wait for a new Google
exchange); the credential never outlives it."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from bridge.clouds.aws import MIN_REMAINING as AWS_MIN_REMAINING
from bridge.clouds.aws import AwsCredentials
from bridge.errors import ExchangeError
from bridge.logs import Redactor
from bridge.metrics import Metrics
from bridge.model import Material
from bridge.refresh.pipeline import KEEP_FOR, TargetPipeline
from bridge.refresh.policy import Policy
from bridge.refresh.scheduler import Scheduler
from bridge.store import CredentialStore
from bridge.testing import FakeClock
from tests.unit.refresh.test_scheduler import LIFETIME, ScriptedHop, ScriptedSource, _target

POLICY = Policy(min_remaining=AWS_MIN_REMAINING)


class _Later:
    """A later hop (AssumeRole-like) that is down when told, else returns a credential
    living twice as long as the first hop's (the chain's expiry must still be the first's)."""

    name = "aws_assume_role"
    scope = "aws_sts other us-east-1"
    judge = "aws_sts"

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.calls = 0
        self.down = False

    def exchange(self, material: Material) -> AwsCredentials:
        self.calls += 1
        if self.down:
            raise ExchangeError("down", hop=self.name, code="ServiceUnavailable",
                                retryable=True, reason="unavailable")
        return AwsCredentials(access_key_id=f"ASIA{self.calls:016d}", secret_access_key="s" * 40,
                              session_token="t" * 100, expires_at=self.clock.time() + 2 * LIFETIME)


class Rig:
    def __init__(self) -> None:
        self.clock = FakeClock()
        self.first, self.later = ScriptedHop(self.clock), _Later(self.clock)
        self.pipeline = TargetPipeline(_target("c"), source=ScriptedSource(self.clock),
                                       hops=[self.first, self.later],
                                       monotonic=self.clock.monotonic, now=self.clock.time)
        self.store = CredentialStore(("c",))
        self.scheduler = Scheduler([self.pipeline], store=self.store, clock=self.clock,
                                   metrics=Metrics(CollectorRegistry()), redactor=Redactor(),
                                   policy=POLICY)

    async def at(self, when: float, *, down: bool = False) -> None:
        """One scheduler attempt at monotonic `when`, the later hop down or not."""
        await self.clock.advance(when - self.clock.monotonic())
        self.later.down = down
        await self.scheduler.refresh(self.pipeline)

    def calls(self) -> tuple[int, int]:
        return self.first.calls, self.later.calls

    def held(self) -> tuple[float, float]:
        """(deadline, received) of the credential held."""
        status = self.store.get("c")
        assert status is not None
        assert status.credential is not None
        return status.credential.deadline, status.credential.received


async def test_a_lapsed_chain_recovers_from_old_kept_material_without_the_first_hop() -> None:
    """Credential lapsed at L; the first hop's output kept at 0.7 L (good until 1.7 L) is
    past KEEP_FOR at 1.05 L but leaves 0.65 L: only the later hop is called, the
    credential ends with that material, and its policy life starts now (its refresh
    spreads over what it has left, not at once)."""
    rig = Rig()
    await rig.at(0.0)
    await rig.at(0.7 * LIFETIME, down=True)
    assert rig.calls() == (2, 2)
    now = 1.05 * LIFETIME
    assert now - 0.7 * LIFETIME > KEEP_FOR * LIFETIME
    assert 1.7 * LIFETIME - now > POLICY.least_useful_life
    await rig.at(now)
    assert rig.calls() == (2, 3)
    assert rig.held() == (1.7 * LIFETIME, now)  # bounded by the kept link, not the 2 L one
    delay = POLICY.spread_refresh(issued_at=now, expires_at=1.7 * LIFETIME, now=now, draw=0.0)
    assert delay >= 0.25 * 0.65 * LIFETIME - 1


async def test_a_chain_still_holding_a_valid_credential_does_the_whole_chain() -> None:
    """Same kept material, past KEEP_FOR, but the credential held is still valid: the
    retry starts from the SVID (no short-lived credential from a normal refresh)."""
    rig = Rig()
    await rig.at(0.0)
    await rig.at(0.3 * LIFETIME, down=True)
    await rig.at(0.6 * LIFETIME)  # kept for 0.3 L > KEEP_FOR; the held one has 0.4 L left
    assert rig.calls() == (3, 3)
    assert rig.held() == (1.6 * LIFETIME, 0.6 * LIFETIME)


async def test_a_credential_inside_the_sdk_window_counts_as_none() -> None:
    """Still valid, but with less than the SDKs' window left (it may not be handed out
    as fresh any more): old kept material is started from, as for a lapsed one."""
    rig = Rig()
    await rig.at(0.0)
    await rig.at(0.5 * LIFETIME, down=True)  # kept: good until 1.5 L
    now = LIFETIME - POLICY.min_remaining + 300
    await rig.at(now)
    assert rig.calls() == (2, 3)
    assert rig.held() == (1.5 * LIFETIME, now)


async def test_kept_material_too_close_to_its_expiry_is_not_started_from() -> None:
    """Lapsed, but the kept material leaves less than `least_useful_life`: the whole
    chain again, a credential of the full lifetime."""
    rig = Rig()
    await rig.at(0.0)
    await rig.at(0.9 * LIFETIME, down=True)  # kept: good until 1.9 L
    now = 1.9 * LIFETIME - POLICY.least_useful_life + 10
    await rig.at(now)
    assert rig.calls() == (3, 3)
    assert rig.held() == (now + LIFETIME, now)


async def test_young_kept_material_keeps_its_start() -> None:
    """Young kept material (under KEEP_FOR) is started from while a valid credential is
    held, as before; the credential's life counts from the kept start."""
    rig = Rig()
    await rig.at(0.0)
    await rig.at(0.5 * LIFETIME, down=True)
    await rig.at(0.6 * LIFETIME)
    assert rig.calls() == (2, 3)
    assert rig.held() == (1.5 * LIFETIME, 0.5 * LIFETIME)


def test_least_useful_life_leaves_a_spread_window() -> None:
    """A credential of exactly that life still has a safe window past a quarter of it."""
    life = POLICY.least_useful_life
    earliest, latest = POLICY.safe_window(issued_at=0.0, expires_at=life + 1.0)
    assert earliest < latest
    assert life + 1.0 - latest >= POLICY.min_remaining
