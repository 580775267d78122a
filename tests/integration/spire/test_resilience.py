"""The bridge daemon while SPIRE components die and come back.

The bridge runs as `spiffe-bridge run` against a second AWS STS emulator whose clock is
behind, so every 15-minute session has LIFETIME seconds left and the bridge refreshes it
every LIFETIME / 4 seconds: a test sees several refreshes in a few seconds, with real
SVID fetches each time.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from spiffe.errors import PySpiffeError

from tests.integration.spire.conftest import BridgeProcess, StartBridge, wait_for_sample
from tests.support.spire import (
    ROLE_ANY,
    WORKLOAD_A,
    SpireDeployment,
    jwt_claims,
    unique_audience,
    wait_until,
)

pytestmark = pytest.mark.integration

LIFETIME = 20.0  # seconds left on each session: a refresh every 5 s
REFRESH_EVERY = LIFETIME / 4


def _target(url: str, **extra: Any) -> dict[str, Any]:
    return {"name": "svc", "spiffe_id": WORKLOAD_A,
            "aws": {"role_arn": ROLE_ANY, "region": "us-east-1", "duration": "15m",
                    "sts_endpoint": url}, **extra}


def _successes(bridge: BridgeProcess) -> float:
    return bridge.sample("refresh_total", target="svc", result="success") or 0.0


def _access_key(outdir: Path) -> str:
    return str(json.loads((outdir / "aws" / "svc.json").read_text())["AccessKeyId"])


def _wait_fresh(bridge: BridgeProcess, timeout: float) -> None:
    wait_until(lambda: bridge.target("svc")["state"] == "fresh", timeout,
               "target svc to be fresh")


def test_agent_killed_and_restarted_mid_run(
        spire: SpireDeployment, bridge_process: StartBridge, outdir: Path) -> None:
    """SIGKILL the agent: the next refresh fails (workload_api_up 0, reason unavailable)
    while the last good credential stays served; after the restart a refresh succeeds
    (workload_api_up 1) with an SVID the new agent process had minted (its JWT cache
    died with it)."""
    sts = spire.skewed_sts(LIFETIME)
    bridge = bridge_process([_target(sts.url)])
    _wait_fresh(bridge, 20)
    assert bridge.sample("workload_api_up") == 1
    # kill right after a refresh, so the credential in hand has most of its life left
    done = _successes(bridge)
    wait_for_sample(bridge, "refresh_total", lambda v: v > done, REFRESH_EVERY + 5,
                    target="svc", result="success")
    served = _access_key(outdir)
    token_before = sts.requests[-1].params["WebIdentityToken"]

    spire.agent.kill()
    wait_for_sample(bridge, "workload_api_up", lambda v: v == 0, REFRESH_EVERY + 5)
    status, body = bridge.readyz()
    target = body["targets"]["svc"]
    assert (status, target["state"], target["ready"]) == (200, "stale", True)
    assert target["last_error"] == "unavailable"
    assert _access_key(outdir) == served  # the last good credential, still on disk
    failures = bridge.sample("refresh_failures_total", target="svc", stage="svid",
                             reason="unavailable")
    assert failures is not None
    assert failures >= 1

    spire.start_agent()
    wait_for_sample(bridge, "workload_api_up", lambda v: v == 1, 20)
    _wait_fresh(bridge, 20)
    assert _access_key(outdir) != served
    token_after = sts.requests[-1].params["WebIdentityToken"]
    assert token_after != token_before
    assert jwt_claims(token_after)["iat"] > jwt_claims(token_before)["iat"]
    assert bridge.readyz()[0] == 200


def test_server_stopped_agent_cache_serves_then_recovers(
        spire: SpireDeployment, bridge_process: StartBridge) -> None:
    """spire-server down: the agent keeps answering from its JWT-SVID cache (the very
    token it had) and the OIDC provider keeps publishing the keys it last read, so the
    bridge keeps refreshing; an audience the agent has not cached cannot be minted until
    the server is back."""
    aud = unique_audience("cached")
    spire.allow_aws_audience(aud)
    sts = spire.skewed_sts(LIFETIME)
    cached = spire.fetch_jwt(aud, WORKLOAD_A).token  # fresh in the agent's cache
    published = spire.published_kids()
    bridge = bridge_process([_target(sts.url, audience=aud)])
    _wait_fresh(bridge, 20)

    spire.server.stop()
    seen_before = len(sts.requests)
    assert spire.fetch_jwt(aud, WORKLOAD_A).token == cached
    with pytest.raises(PySpiffeError, match=r"could not fetch JWT-SVID|UNAVAILABLE"):
        spire.fetch_jwt(unique_audience("uncached"), WORKLOAD_A, timeout=15)
    done = _successes(bridge)
    wait_for_sample(bridge, "refresh_total", lambda v: v > done, REFRESH_EVERY + 5,
                    target="svc", result="success")
    during = [r.params["WebIdentityToken"] for r in sts.requests[seen_before:]]
    assert during
    assert set(during) == {cached}
    assert bridge.target("svc")["state"] == "fresh"
    assert bridge.sample("workload_api_up") == 1
    assert spire.published_kids() == published

    spire.start_server()
    wait_until(lambda: spire.fetch_jwt(unique_audience("after"), WORKLOAD_A), 20,
               "the agent to mint again after the server restart")
    done = _successes(bridge)
    wait_for_sample(bridge, "refresh_total", lambda v: v > done, REFRESH_EVERY + 5,
                    target="svc", result="success")
    assert bridge.target("svc")["state"] == "fresh"
