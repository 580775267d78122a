"""The dev stack with a Broker API endpoint (`devstack.broker`, trusting the stack's X.509
CA, whose Workload API hands the bridge its X.509-SVID) and the real daemon: a workload
gets its own credential, the exchange carries its own SPIFFE ID as `sub`."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import yaml

from bridge._proto.spiffebridge.v1 import credentials_pb2 as pb
from bridge._proto.spiffebridge.v1 import credentials_pb2_grpc as pb_grpc
from bridge.devstack import DevStack
from bridge.devstack.broker import BrokerServer
from tests.support.process import start_bridge, stop
from tests.support.spire import free_port, http_get, wait_until

TD = "example.org"
BRIDGE_ID = f"spiffe://{TD}/spiffe-bridge"
ME = f"spiffe://{TD}/ns/demo/sa/a"
ROLE = "arn:aws:iam::111122223333:role/demo-a"


@pytest.fixture
def node(short_dir: Path, outdir: Path) -> Iterator[tuple[DevStack, Path]]:
    with DevStack(short_dir / "stack", x509=True, identities=[BRIDGE_ID]) as stack:
        stack.aws.add_role(ROLE, provider_url=stack.issuer, aud="sts.amazonaws.com", sub=ME)
        broker = BrokerServer(short_dir / "broker" / "b.sock", authority=stack.authority,
                              ca=stack.x509, agent_id=f"spiffe://{TD}/spire/agent/dev",
                              brokers=[BRIDGE_ID], registrations={os.getuid(): [ME]})
        with broker:
            http = f"127.0.0.1:{free_port()}"
            config = short_dir / "bridge.yaml"
            config.write_text(yaml.safe_dump({
                "workload_api": {"socket": stack.workload_socket_uri},
                "outputs": {"directory": str(outdir)},
                "http": {"address": http},
                "grpc": {"socket": f"unix://{short_dir}/bridge.sock"},
                "broker": {"socket": broker.uri, "agent_id": f"spiffe://{TD}/spire/agent/*",
                           "spiffe_id": BRIDGE_ID},
                "workloads": {"grpc_socket": f"unix://{short_dir}/w.sock"},
                "targets": [],
                "workload_targets": [{
                    "name": "demo", "match": f"spiffe://{TD}/ns/{{ns}}/sa/{{sa}}",
                    "aws": {"role_arn": "arn:aws:iam::111122223333:role/{ns}-{sa}",
                            "region": "us-east-1", "sts_endpoint": stack.aws.url},
                    "serve": {"grpc": True}}],
            }))
            log = short_dir / "bridge.log"
            bridge = start_bridge("run", "--config", str(config), log=log)
            try:
                wait_until(lambda: http_get(f"http://{http}/healthz")[0] == 200, 30,
                           "the bridge to serve")
                yield stack, short_dir / "w.sock"
            finally:
                stop(bridge)


def test_a_workload_gets_its_own_credential_through_the_dev_broker(
        node: tuple[DevStack, Path]) -> None:
    stack, socket = node

    def ask() -> pb.GetCredentialResponse:
        # UNAVAILABLE ("try again") while the bridge is still connecting under load
        with grpc.insecure_channel(f"unix:{socket}") as channel:
            return pb_grpc.CredentialServiceStub(channel).GetCredential(
                pb.GetCredentialRequest(workload_target="demo"), timeout=20)

    got = wait_until(ask, 30, "the first workload credential", interval=0.5)
    assert got.credential.spiffe_id == ME
    issued = {c.access_key_id: c for c in stack.aws.issued}
    assert issued[got.credential.aws.access_key_id].subject == ME
    assert issued[got.credential.aws.access_key_id].role_arn == ROLE
