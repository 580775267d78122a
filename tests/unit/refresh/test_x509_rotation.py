"""`source: x509` targets on a virtual clock: an SVID rotation refreshes at once, a
stream update with the same leaf does not, and the schedule goes on as before."""

from __future__ import annotations

import asyncio
import random

from prometheus_client import CollectorRegistry

from bridge.clouds.aws import MIN_REMAINING, AwsCredentials
from bridge.clouds.aws.config import RolesAnywhereHopConfig
from bridge.config import TargetConfig
from bridge.logs import Redactor
from bridge.metrics import Metrics
from bridge.model import Material, State
from bridge.refresh.pipeline import TargetPipeline
from bridge.refresh.policy import Policy
from bridge.refresh.scheduler import Scheduler
from bridge.store import CredentialStore
from bridge.testing import FakeClock
from bridge.x509_svid import X509Svid
from tests.unit.refresh.test_scheduler import ScriptedSource

LIFETIME = 3600.0
SPIFFE_ID = "spiffe://example.org/w"


class Stream:
    """An X.509 source whose leaf changes on `rotate()`."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.generation = 0

    def rotate(self) -> None:
        self.generation += 1

    def _svid(self) -> X509Svid:
        now = self.clock.time()
        return X509Svid(spiffe_id=SPIFFE_ID, chain=(f"leaf-{self.generation}".encode(),),
                        private_key=object(), expires_at=now + 1800, issued_at=now,
                        deadline=self.clock.monotonic() + 1800)

    def fetch(self, spiffe_id: str | None) -> X509Svid:
        return self._svid()

    def current(self, spiffe_id: str | None) -> str | None:
        return self._svid().fingerprint

    def close(self) -> None:
        pass


class Hop:
    name = "aws_roles_anywhere"
    scope = "aws_rolesanywhere us-east-1"
    judge = "aws_rolesanywhere"

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.leaves: list[bytes] = []

    def exchange(self, material: Material) -> AwsCredentials:
        assert isinstance(material, X509Svid)
        self.leaves.append(material.leaf)
        return AwsCredentials(access_key_id=f"ASIA{len(self.leaves):016d}",
                              secret_access_key="s" * 40, session_token="t" * 100,
                              expires_at=self.clock.time() + LIFETIME)


def _rig() -> tuple[FakeClock, Stream, Hop, Scheduler, Metrics, CredentialStore]:
    clock = FakeClock()
    stream, hop = Stream(clock), Hop(clock)
    target = TargetConfig(name="t", audience="sts.amazonaws.com", source="x509", hops=(
        RolesAnywhereHopConfig(
            role_arn="arn:aws:iam::111122223333:role/r", region="us-east-1",
            trust_anchor_arn="arn:aws:rolesanywhere:us-east-1:111122223333:trust-anchor/a",
            profile_arn="arn:aws:rolesanywhere:us-east-1:111122223333:profile/p"),))
    store = CredentialStore(["t"])
    metrics = Metrics(CollectorRegistry())
    pipeline = TargetPipeline(target, source=ScriptedSource(clock), hops=[hop],
                              monotonic=clock.monotonic, now=clock.time, x509=stream)
    scheduler = Scheduler([pipeline], store=store, clock=clock, metrics=metrics,
                          redactor=Redactor(), policy=Policy(min_remaining=MIN_REMAINING),
                          rng=random.Random(3))
    return clock, stream, hop, scheduler, metrics, store


async def test_a_rotation_refreshes_at_once_and_only_a_new_leaf_does() -> None:
    clock, stream, hop, scheduler, metrics, store = _rig()
    task = asyncio.create_task(scheduler.run())
    await clock.settle()
    assert hop.leaves == [b"leaf-0"]
    assert metrics.sample("spiffe_bridge_x509_svid_rotations_total", target="t") == 0
    assert metrics.sample("spiffe_bridge_x509_svid_expiry_timestamp_seconds",
                          target="t") == clock.time() + 1800
    await clock.advance(100)
    scheduler.svid_rotated({""})  # a stream update, same leaf (a bundle change)
    await clock.advance(1)
    assert hop.leaves == [b"leaf-0"]
    stream.rotate()
    scheduler.svid_rotated({""})
    await clock.advance(1)
    assert hop.leaves == [b"leaf-0", b"leaf-1"]
    assert metrics.sample("spiffe_bridge_x509_svid_rotations_total", target="t") == 1
    assert store.get("t").state is State.FRESH  # type: ignore[union-attr]
    scheduler.svid_rotated({"spiffe://example.org/other"})  # another target's ID
    stream.rotate()
    await clock.advance(1)
    assert len(hop.leaves) == 2
    # the schedule goes on from the new session: about half its life later
    await clock.advance(LIFETIME * 0.56)
    assert len(hop.leaves) == 3
    task.cancel()
