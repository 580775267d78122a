"""The fake agent's answer and bundle switches, seen through a plain py-spiffe client."""

from __future__ import annotations

import json
import threading

import pytest
import spiffe
from spiffe import JwtBundleSet

from bridge.devstack import DevStack, SvidEntry, WorkloadFaults
from tests.integration.reliability.conftest import DEMO, OTHER

pytestmark = pytest.mark.integration
AUD = "sts.amazonaws.com"


def test_replace_svid_list_sends_the_entries_as_given_then_stops(
        honest_agent: DevStack) -> None:
    """`times` answers are replaced (any identity, token, hint), then honest ones resume."""
    token = honest_agent.authority.mint(OTHER, [AUD], 300)
    honest_agent.workload.faults.replace_svid_list(
        [SvidEntry(OTHER, token, "h"), SvidEntry(OTHER, token, "h")], times=1)
    with spiffe.WorkloadApiClient(honest_agent.workload_socket_uri, default_timeout=5) as c:
        replaced = c.fetch_jwt_svids({AUD}, subject=spiffe.SpiffeId(DEMO))
        honest = c.fetch_jwt_svids({AUD}, subject=spiffe.SpiffeId(DEMO))
    assert [s.token for s in replaced] == [token, token]
    assert [str(s.spiffe_id) for s in honest] == [DEMO]


def test_replace_svid_list_may_compute_the_answer_from_the_request(
        honest_agent: DevStack) -> None:
    """A function gets the requested SPIFFE ID ("" if none) and audiences."""
    seen: list[tuple[str, tuple[str, ...]]] = []

    def answer(wanted: str, aud: tuple[str, ...]) -> list[SvidEntry]:
        seen.append((wanted, aud))
        return [SvidEntry(DEMO, honest_agent.authority.mint(DEMO, list(aud), 300))]

    honest_agent.workload.faults.replace_svid_list(answer)
    with spiffe.WorkloadApiClient(honest_agent.workload_socket_uri, default_timeout=5) as c:
        c.fetch_jwt_svids({AUD})
        c.fetch_jwt_svids({AUD}, subject=spiffe.SpiffeId(DEMO))
    assert seen == [("", (AUD,)), (DEMO, (AUD,))]


def test_replace_bundles_reaches_open_streams_and_reset_restores_them(
        honest_agent: DevStack) -> None:
    """An open FetchJWTBundles stream gets the forged map at once, and the honest one
    again after reset()."""
    received: list[JwtBundleSet] = []
    errors: list[Exception] = []
    changed = threading.Event()

    def on_bundles(bundles: JwtBundleSet) -> None:
        received.append(bundles)
        changed.set()

    bundle = json.dumps(honest_agent.authority.spiffe_bundle()).encode()
    with spiffe.WorkloadApiClient(honest_agent.workload_socket_uri, default_timeout=5) as c:
        handle = c.stream_jwt_bundles(on_bundles, errors.append)
        try:
            assert changed.wait(5)
            changed.clear()
            honest_agent.workload.faults.replace_bundles({"elsewhere.example": bundle})
            assert changed.wait(5)
            changed.clear()
            honest_agent.workload.faults.reset()
            assert changed.wait(5)
        finally:
            handle.cancel()
    domains = [sorted(str(b.trust_domain) for b in s.bundles) for s in received]
    assert domains == [["example.org"], ["elsewhere.example"], ["example.org"]]
    assert errors == []


def test_switch_arguments_are_checked() -> None:
    faults = WorkloadFaults()
    with pytest.raises(ValueError, match="positive"):
        faults.replace_svid_list([], times=0)
    assert faults.take_svid_list("", ("a",)) is None
    faults.replace_svid_list([SvidEntry(DEMO, "t")], times=2)
    assert faults.take_svid_list("", ("a",)) == (SvidEntry(DEMO, "t"),)
    assert faults.take_svid_list("", ("a",)) == (SvidEntry(DEMO, "t"),)
    assert faults.take_svid_list("", ("a",)) is None
    assert faults.bundle_replacement() is None
