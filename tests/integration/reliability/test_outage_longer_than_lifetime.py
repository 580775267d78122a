"""Fault scenario: a cloud outage longer than the credential lifetime, RELIABILITY.md (a)
row 9 (and row 8's "go not-ready once the credentials lapse").

AWS STS and Google (STS + IAM Credentials) both go away (nothing listens) for 80
minutes, longer than the 1-hour credentials' life. The last good credentials are served, stale,
on every output until their real expiry (as the emulators recorded it), then removed
from every output: files gone, gRPC UNAVAILABLE, the metadata endpoints 503, the
target expired and the bridge not ready. When the clouds come back, the next retry
(at most the 5-minute cap away) delivers again. The session lives its STS
`DurationSeconds` (1 h), not the 5-minute life of the JWT-SVID it was exchanged for.

Virtual time: one FakeClock for the daemon and both clouds; the never-expired checker
reads every output throughout, judged by that clock.
"""

from __future__ import annotations

import pytest

from bridge.refresh.policy import BACKOFF_CAP
from bridge.serving.health import readiness
from tests.support.expiry import MakeScenario, channels, digest

pytestmark = pytest.mark.integration
ALL = channels("aws", "gcp")


def test_outage_longer_than_the_lifetime_serves_until_real_expiry_then_nothing_then_recovers(
        scenario: MakeScenario) -> None:
    s = scenario(("aws", "gcp"), virtual=True, metadata=True)
    vt, stack = s.vt, s.stack
    held = {t: s.status(t).credential for t in ("aws", "gcp")}
    aws_real = stack.aws.issued[-1].expiration.timestamp()
    # The session's own expiry (not the SVID's), from STS's clock: never later, and at
    # most the 1 s resolution of its Date header earlier.
    assert aws_real - 1 <= held["aws"].expires_at <= aws_real
    assert held["aws"].expires_at - held["aws"].issued_at == pytest.approx(3600, abs=1)
    assert held["aws"].svid_expires_at - held["aws"].issued_at <= 300
    expiry = min(c.expires_at for c in held.values())
    last = max(c.expires_at for c in held.values())
    stack.aws.stop()
    stack.gcp.stop()
    down_at = vt.now()

    vt.advance(expiry - 2 - vt.now())  # two seconds before the real expiry
    assert {s.state(t) for t in held} == {"stale"}
    assert {s.status(t).last_error for t in held} == {"unreachable"}
    assert readiness(s.bridge.daemon.store.snapshot(), vt.monotonic())[0]
    before = s.sweep()
    assert before.served() == ALL
    assert {r.credential for r in before.reads.values()} == {  # the held ones, nothing else
        digest(held["aws"].material.access_key_id), digest(held["gcp"].material.access_token)}

    vt.advance(last + 1 - vt.now())  # one second after it
    assert {s.state(t) for t in held} == {"expired"}
    assert not readiness(s.bridge.daemon.store.snapshot(), vt.monotonic())[0]
    after = s.sweep()
    assert after.served() == set()
    assert {after.outcome(c) for c in after.channels("grpc:")} == {"UNAVAILABLE"}
    assert {after.outcome(c) for c in ("container:aws", "imds:aws", "gce:gcp")} == {"503"}
    assert {after.outcome(c) for c in ("file:aws/aws.json", "file:gcp/gcp.json",
                                       "file:gcp/gcp.token")} == {"absent"}
    assert after.outcome("file:aws/credentials") in {"absent", "empty"}
    assert not any(s.outdir.glob("*/*.json")), sorted(s.outdir.rglob("*"))

    vt.advance(down_at + 80 * 60 - vt.now())  # 80 minutes down in all
    assert {s.state(t) for t in held} == {"expired"}
    stack.aws.start()
    stack.gcp.start()
    for target in held:
        if s.state(target) != "fresh":
            assert vt.advance_to_wake(f"refresh:{target}") <= BACKOFF_CAP
    assert {s.state(t) for t in held} == {"fresh"}
    assert readiness(s.bridge.daemon.store.snapshot(), vt.monotonic())[0]
    assert s.sweep().served() == ALL
