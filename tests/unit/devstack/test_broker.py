"""The dev stack's Broker API endpoint, driven by the bridge's own broker client over
mutual TLS: PID attestation by uid, JWT-SVIDs its bundle verifies, SPIRE's refusals."""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge.devstack.authority import JwtAuthority
from bridge.devstack.broker import BrokerServer, DevCa
from bridge.errors import SourceError
from bridge.sources.broker import BrokerClient, BrokerConfig
from bridge.sources.broker_tls import TlsMaterial

TD = "dev.test"
AGENT = f"spiffe://{TD}/spire/agent/dev/node-1"
BRIDGE = f"spiffe://{TD}/spiffe-bridge"
MINE = f"spiffe://{TD}/ns/demo/sa/a"


@pytest.fixture
def endpoint() -> Iterator[BrokerServer]:
    work = Path(tempfile.mkdtemp(prefix="sb-brk-", dir="/tmp"))
    server = BrokerServer(work / "broker.sock", authority=JwtAuthority(TD), ca=DevCa(TD),
                          agent_id=AGENT, brokers=[BRIDGE],
                          registrations={os.getuid(): [MINE]})
    with server:
        yield server
    (work / "broker.sock").unlink(missing_ok=True)
    work.rmdir()


def _client(server: BrokerServer, *, who: str = BRIDGE,
            agent: str = f"spiffe://{TD}/spire/agent/*") -> BrokerClient:
    svid = server.ca.issue(who)
    return BrokerClient(BrokerConfig(socket=server.uri, agent_id=agent, timeout=3),
                        workload_api_socket="unix:///nonexistent", now=time.time,
                        material=lambda: TlsMaterial(svid.chain, svid.key,
                                                     (server.ca.certificate,)))


def test_a_process_gets_the_svids_of_its_uid(endpoint: BrokerServer) -> None:
    client = _client(endpoint)
    try:
        (svid,) = client.fetch(os.getpid(), "sts.amazonaws.com",
                               deadline=time.monotonic() + 5)
    finally:
        client.close()
    assert svid.spiffe_id == MINE
    assert svid.audience == "sts.amazonaws.com"


def test_a_uid_without_registration_gets_no_identity(endpoint: BrokerServer) -> None:
    endpoint.register(os.getuid())
    client = _client(endpoint)
    try:
        with pytest.raises(SourceError) as info:
            client.fetch(os.getpid(), "aud", deadline=time.monotonic() + 5)
    finally:
        client.close()
    assert (info.value.reason, info.value.retryable) == ("no_identity", False)


def test_an_unlisted_broker_is_refused(endpoint: BrokerServer) -> None:
    client = _client(endpoint, who=f"spiffe://{TD}/someone-else")
    try:
        with pytest.raises(SourceError) as info:
            client.fetch(os.getpid(), "aud", deadline=time.monotonic() + 5)
    finally:
        client.close()
    assert not info.value.retryable


def test_the_bridge_refuses_an_endpoint_with_another_agent_id(endpoint: BrokerServer) -> None:
    client = _client(endpoint, agent=f"spiffe://{TD}/spire/agent/other/*")
    try:
        with pytest.raises(SourceError) as info:
            client.fetch(os.getpid(), "aud", deadline=time.monotonic() + 5)
    finally:
        client.close()
    assert info.value.retryable
    assert "refused the agent's certificate" in info.value.detail
