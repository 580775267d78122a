"""One bridge, many workloads: the SPIFFE Broker API on real SPIRE v1.15.3.

The node of tests/support/broker_node.py (SPIRE with `experimental.broker`, the bridge
as its broker, one `workload_targets` rule), and workload processes under uids 2001 and
2002 (each with a `unix:uid:` entry) and 2003 (none), forked from a preloaded
forkserver (tests/support/workloads.py). Each workload's exchange is checked at the STS
emulator: the `sub` it carried is the workload's own SPIFFE ID, and the role that
trusts only that ID is the one assumed.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml

from bridge._proto.spiffebridge.v1 import credentials_pb2 as pb
from bridge._proto.spiffebridge.v1 import credentials_pb2_grpc as pb_grpc
from bridge.errors import SourceError
from bridge.sources.broker import BrokerClient, BrokerConfig
from tests.support import workloads as wl
from tests.support.broker_node import (
    BRIDGE_ID,
    ID_1,
    ID_2,
    ROLE_1,
    ROLE_2,
    RULE,
    UID_1,
    UID_2,
    UID_NONE,
    Node,
    broker_node,
    service_account,
)
from tests.support.spire import ACCOUNT, TRUST_DOMAIN, require_spire, wait_until


@pytest.fixture(scope="module")
def node() -> Iterator[Node]:
    with broker_node(require_spire()) as started:
        yield started


@pytest.fixture
def up(node: Node, request: pytest.FixtureRequest) -> Node:
    node.spire.ensure_running()
    node.bridge.check_alive()
    return node


def _ok(answer: dict[str, Any]) -> dict[str, Any]:
    assert answer["code"] == "OK", answer
    return answer


class TestOwnIdentity:
    def test_grpc_each_workload_gets_its_own(self, up: Node) -> None:
        """Over the workload socket each uid gets the credential of its own SPIFFE ID:
        its exchange carried that ID as `sub` and assumed the role trusting only it."""
        one = _ok(wl.run_as(UID_1, wl.grpc_get, up.workload_socket, RULE))
        two = _ok(wl.run_as(UID_2, wl.grpc_get, up.workload_socket, RULE))
        assert (one["spiffe_id"], two["spiffe_id"]) == (ID_1, ID_2)
        assert up.subject_of(one["access_key_id"]) == ID_1
        assert up.subject_of(two["access_key_id"]) == ID_2
        assert (up.role_of(one["access_key_id"]), up.role_of(two["access_key_id"])) == (
            ROLE_1, ROLE_2)

    def test_imds_unmodified_boto3_each_its_own(self, up: Node) -> None:
        """boto3 on IMDSv2, no change to it: each workload's GetCallerIdentity is its
        own role, from an exchange whose `sub` was its own ID."""
        one = wl.run_as(UID_1, wl.boto3_identity, up.imds_url, up.spire.aws.url)
        two = wl.run_as(UID_2, wl.boto3_identity, up.imds_url, up.spire.aws.url)
        assert one["arn"].startswith(f"arn:aws:sts::{ACCOUNT}:assumed-role/team1-app/")
        assert two["arn"].startswith(f"arn:aws:sts::{ACCOUNT}:assumed-role/team2-app/")
        assert up.subject_of(one["access_key_id"]) == ID_1
        assert up.subject_of(two["access_key_id"]) == ID_2

    def test_gce_each_workload_its_own_service_account(self, up: Node) -> None:
        """GCE metadata: each caller's account is the one its SPIFFE ID renders to (and
        only that ID may impersonate), and its token is that account's at the emulator;
        a process without an entry gets 403."""
        for uid, spiffe_id in ((UID_1, ID_1), (UID_2, ID_2)):
            got = wl.run_as(uid, wl.gce_raw, up.gce)
            assert (got["email_status"], got["token_status"]) == (200, 200), got
            assert got["email"] == service_account(spiffe_id)
            token = up.spire.gcp.whoami(json.loads(got["token"])["access_token"])
            assert token is not None
            assert token.service_account == service_account(spiffe_id)
        denied = wl.run_as(UID_NONE, wl.gce_raw, up.gce)
        assert denied["token_status"] == 403, denied
        assert "access_token" not in denied["token"]

    def test_credential_process_gives_each_workload_its_own(self, up: Node) -> None:
        """`spiffe-bridge credential-process --workload-target` (an SDK's
        credential_process, for pods that cannot reach loopback IMDS): the process's own
        credential; without an entry, exit 1 and nothing printed."""
        one = wl.run_as(UID_1, wl.credential_process, up.workload_socket, RULE)
        assert one["code"] == 0, one
        assert one["json"]["Version"] == 1
        assert up.subject_of(one["json"]["AccessKeyId"]) == ID_1
        none = wl.run_as(UID_NONE, wl.credential_process, up.workload_socket, RULE)
        assert none["code"] == 1, none
        assert none["json"] is None
        assert "no identity" in none["stderr"]

    def test_processes_of_one_identity_share_one_credential(self, up: Node) -> None:
        """Two processes of uid 2001: one exchange, the same credential (cached)."""
        first = _ok(wl.run_as(UID_1, wl.grpc_get, up.workload_socket, RULE))
        exchanges = len(up.spire.aws.issued)
        second = _ok(wl.run_as(UID_1, wl.grpc_get, up.workload_socket, RULE))
        assert second["access_key_id"] == first["access_key_id"]
        assert len(up.spire.aws.issued) == exchanges


    def test_watch_streams_the_callers_own(self, up: Node) -> None:
        """WatchCredential with `workload_target`: the first message is the caller's."""
        one = _ok(wl.run_as(UID_1, wl.grpc_watch_first, up.workload_socket, RULE))
        assert one["spiffe_id"] == ID_1
        assert up.subject_of(one["access_key_id"]) == ID_1
        none = wl.run_as(UID_NONE, wl.grpc_watch_first, up.workload_socket, RULE)
        assert none["code"] == "PERMISSION_DENIED", none


class TestAgentVerified:
    def test_only_the_agents_spiffe_id_is_accepted(self, up: Node) -> None:
        """A broker client expecting another agent ID refuses the real agent (its chain
        verifies, its SPIFFE ID does not match): UNAVAILABLE, nothing asked. The same
        client config with the agent's ID gets the workload's SVID."""
        holder = wl.Workload(UID_1, time.sleep, (4,))
        clients = [BrokerClient(BrokerConfig(
            socket=f"unix://{up.spire.broker_socket}", agent_id=agent, spiffe_id=BRIDGE_ID,
            timeout=3), workload_api_socket=up.spire.agent_socket_uri, now=time.time)
            for agent in (f"spiffe://{TRUST_DOMAIN}/not-the-agent",
                          f"spiffe://{TRUST_DOMAIN}/spire/agent/*")]
        try:
            with pytest.raises(SourceError) as info:
                clients[0].fetch(holder.pid, "sts.amazonaws.com",
                                 deadline=time.monotonic() + 5)
            assert info.value.retryable
            assert "refused the agent's certificate" in info.value.detail
            svids = clients[1].fetch(holder.pid, "sts.amazonaws.com",
                                     deadline=time.monotonic() + 5)
            assert [s.spiffe_id for s in svids] == [ID_1]
        finally:
            for client in clients:
                client.close()
            holder.result()


class TestDenied:
    def test_process_without_entry_is_denied(self, up: Node) -> None:
        """No registration entry for uid 2003: PERMISSION_DENIED, and IMDS 403."""
        answer = wl.run_as(UID_NONE, wl.grpc_get, up.workload_socket, RULE)
        assert answer["code"] == "PERMISSION_DENIED", answer
        assert "no identity" in answer["details"]
        raw = wl.run_as(UID_NONE, wl.imds_raw, up.imds, RULE)
        assert raw["status"] == 403, raw
        assert "AccessKeyId" not in raw["body"]

    def test_naming_another_pid_gets_nothing(self, up: Node) -> None:
        """The request has no way to name a process: metadata claiming workload 1's pid
        (while it is alive) changes nothing; the caller is who connected."""
        holder = wl.Workload(UID_1, time.sleep, (5,))
        try:
            claim = (("pid", str(holder.pid)), ("x-workload-pid", str(holder.pid)))
            answer = wl.run_as(UID_NONE, wl.grpc_get, up.workload_socket, RULE, claim)
            assert answer["code"] == "PERMISSION_DENIED", answer
        finally:
            holder.result()

    @pytest.mark.parametrize("keep_own", [False, True], ids=["handed-over", "shared"])
    def test_reused_connection_gets_nothing(self, up: Node, keep_own: bool) -> None:
        """Workload 1's kept-alive IMDS connection, handed to uid 2003 (SCM_RIGHTS): each
        request is identified anew by who holds the socket, so the receiver is asked
        about as itself (denied), or, while both hold it, refused as ambiguous."""
        mine, theirs = socket.socketpair()
        with mine, theirs:
            giver = wl.Workload(UID_1, wl.imds_handoff, (up.imds, RULE, mine, keep_own))
            taker = wl.Workload(UID_NONE, wl.imds_use_received, (up.imds, RULE, theirs))
            took = taker.result()
            gave = giver.result()
        assert gave["own_status"] == 200  # the connection did serve workload 1
        assert took["status"] == 403, took
        assert "AccessKeyId" not in took["body"]

    def test_a_connection_outliving_its_connector_gets_nothing(self, up: Node) -> None:
        """Racing an exit: workload 1 connects to the workload socket, hands the
        connection to uid 2003 and exits; calls over it then name a process that is
        gone (pidfd), so they are refused, never answered as workload 1."""
        mine, theirs = socket.socketpair()
        with mine, theirs:
            taker = wl.Workload(UID_NONE, wl.grpc_over_received, (theirs, RULE))
            giver = wl.Workload(UID_1, wl.connect_and_hand_over, (up.workload_socket, mine))
            giver.result()
            took = taker.result()
        assert took["code"] == "PERMISSION_DENIED", took
        assert "gone" in took["details"]

    def test_exit_mid_call_is_dropped(self, up: Node) -> None:
        """A workload that asks and exits without waiting leaves nothing for anyone,
        and its identity is dropped once no process of it lives."""
        probe = _ok(wl.run_as(UID_2, wl.grpc_get, up.workload_socket, RULE))
        assert probe["spiffe_id"] == ID_2
        wait_until(lambda: up.bridge.sample("workload_identities", rule=RULE) == 0, 30,
                   "every exited workload's identity to be dropped")
        dropped = up.bridge.sample("workload_dropped_total", rule=RULE, reason="gone")
        assert dropped is not None
        assert dropped >= 1


class TestLifecycle:
    def test_short_lived_workloads_leave_no_growth(self, up: Node) -> None:
        """200 short-lived workloads (two identities, gRPC and IMDS): afterwards the
        bridge holds no more fds, threads or identities than before, and its memory
        has not grown past noise."""
        bridge_pid = up.bridge.proc.pid if up.bridge.proc else 0
        _ok(wl.run_as(UID_1, wl.grpc_get, up.workload_socket, RULE))  # warm paths
        wl.run_as(UID_2, wl.imds_raw, up.imds, RULE)
        time.sleep(0.5)
        fds, threads, rss = _usage(bridge_pid)
        for i in range(200):
            uid = UID_1 if i % 2 else UID_2
            if i % 4 < 2:
                _ok(wl.run_as(uid, wl.grpc_get, up.workload_socket, RULE))
            else:
                assert wl.run_as(uid, wl.imds_raw, up.imds, RULE)["status"] == 200
        wait_until(lambda: up.bridge.sample("workload_identities", rule=RULE) == 0, 40,
                   "every identity to be dropped after its processes exited")
        time.sleep(1.0)
        fds_after, threads_after, rss_after = _usage(bridge_pid)
        assert fds_after <= fds + 2, (fds, fds_after)
        assert threads_after <= threads + 2, (threads, threads_after)
        assert rss_after <= rss + 12 * 1024 * 1024, (rss, rss_after)


class TestBrokerDown:
    def test_configured_targets_keep_working_workloads_fail_fast(self, up: Node) -> None:
        """The agent down: the configured target is still served; a workload request
        fails fast with UNAVAILABLE; once the agent is back it works, no restart."""
        assert up.bridge.sample("broker_up") == 1
        up.spire.agent.stop()
        try:
            answer = wl.run_as(UID_1, wl.grpc_get, up.workload_socket, RULE)
            assert answer["code"] == "UNAVAILABLE", answer
            assert answer["seconds"] < 3.0, answer
            assert up.bridge.sample("broker_up") == 0
            with grpc.insecure_channel(f"unix:{up.grpc_socket}") as channel:
                got = pb_grpc.CredentialServiceStub(channel).GetCredential(
                    pb.GetCredentialRequest(target="configured"), timeout=5)
            assert got.credential.aws.access_key_id
        finally:
            up.spire.start_agent()
        up.spire.wait_for_identity(BRIDGE_ID)
        back = wait_until(lambda: _ok(wl.run_as(UID_1, wl.grpc_get, up.workload_socket, RULE)),
                          30, "workload requests to work again")
        assert back["spiffe_id"] == ID_1
        assert up.bridge.sample("broker_up") == 1


class TestBrokerLess:
    """A caller presents its own JWT-SVID for the rule's audience (an agent without the
    broker endpoint; here the test process, uid 0, with an entry of its own)."""

    ID = f"spiffe://{TRUST_DOMAIN}/ns/tokens/sa/root"

    @pytest.fixture
    def token_node(self, up: Node) -> Node:
        if self.ID not in up.spire.entries:
            up.add_workload(os.getuid(), self.ID)
            up.spire.wait_for_identity(self.ID)
        return up

    def test_grpc_bearer_svid_gets_that_identitys_credential(self, token_node: Node) -> None:
        """Its own SVID as `authorization: Bearer`: the exchange's `sub` is the token's."""
        svid = token_node.spire.fetch_jwt("sts.amazonaws.com", self.ID)
        with grpc.insecure_channel(f"unix:{token_node.workload_socket}") as channel:
            got = pb_grpc.CredentialServiceStub(channel).GetCredential(
                pb.GetCredentialRequest(workload_target=RULE), timeout=20,
                metadata=[("authorization", f"Bearer {svid.token}")])
        assert got.credential.spiffe_id == self.ID
        assert token_node.subject_of(got.credential.aws.access_key_id) == self.ID

    def test_container_authorization_svid(self, token_node: Node) -> None:
        """The container endpoint takes the SVID as `Authorization` (what a
        spiffe-helper-kept AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE holds)."""
        svid = token_node.spire.fetch_jwt("sts.amazonaws.com", self.ID)
        status, body = _get(token_node.container, f"/v1/credentials/{RULE}", svid.token)
        assert status == 200, body
        assert token_node.subject_of(json.loads(body)["AccessKeyId"]) == self.ID

    def test_a_token_for_another_audience_is_refused_never_forwarded(
            self, token_node: Node) -> None:
        svid = token_node.spire.fetch_jwt("someone-else", self.ID)
        exchanges = len(token_node.spire.aws.issued)
        with (grpc.insecure_channel(f"unix:{token_node.workload_socket}") as channel,
              pytest.raises(grpc.RpcError) as info):
            pb_grpc.CredentialServiceStub(channel).GetCredential(
                pb.GetCredentialRequest(workload_target=RULE), timeout=20,
                metadata=[("authorization", f"Bearer {svid.token}")])
        assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
        status, _ = _get(token_node.container, f"/v1/credentials/{RULE}", svid.token)
        assert status == 403
        assert len(token_node.spire.aws.issued) == exchanges


class TestReload:
    def test_a_reload_keeps_serving_workloads(self, up: Node) -> None:
        """SIGHUP with a changed workloads section: the workload socket and IMDS are
        listened on anew and answer each caller as before."""
        config = up.bridge.config
        doc = yaml.safe_load(config.read_text())
        doc["workloads"]["idle"] = "11s"
        config.write_text(yaml.safe_dump(doc))
        reloads = up.bridge.sample("config_reloads_total", result="applied") or 0.0
        assert up.bridge.proc is not None
        up.bridge.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: (up.bridge.sample("config_reloads_total", result="applied")
                            or 0.0) > reloads, 20, "the reload to apply")
        answer = wait_until(
            lambda: _ok(wl.run_as(UID_1, wl.grpc_get, up.workload_socket, RULE)), 20,
            "the workload socket to answer after the reload")
        assert answer["spiffe_id"] == ID_1
        boto = wl.run_as(UID_2, wl.boto3_identity, up.imds_url, up.spire.aws.url)
        assert up.subject_of(boto["access_key_id"]) == ID_2


def _get(address: tuple[str, int], path: str, authorization: str) -> tuple[int, str]:
    import http.client

    conn = http.client.HTTPConnection(*address, timeout=20)
    try:
        conn.request("GET", path, headers={"Authorization": authorization})
        response = conn.getresponse()
        return response.status, response.read().decode()
    finally:
        conn.close()


def _usage(pid: int) -> tuple[int, int, int]:
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    threads = len(os.listdir(f"/proc/{pid}/task"))
    rss = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) * 1024
    return fds, threads, rss
