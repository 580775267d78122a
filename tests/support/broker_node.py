"""One node with the SPIFFE Broker API on real SPIRE v1.15.3: a SPIRE deployment of its
own (the agent with `experimental.broker`, the bridge registered as its broker), a
bridge daemon with one `workload_targets` rule (and one configured target), and
registration entries for workload uids 2001 and 2002 (2003 has none). Shared by the
broker tests (tests/integration/spire/test_broker.py) and benchmark (bench_broker.py).
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from bridge.devstack.gcp import federated_principal
from tests.integration.spire.conftest import BridgeProcess
from tests.support import workloads as wl
from tests.support.spire import (
    ACCOUNT,
    GCP_PROVIDER,
    ROLE_ANY,
    TRUST_DOMAIN,
    SpireDeployment,
    free_port,
    wait_until,
)

BRIDGE_ID = f"spiffe://{TRUST_DOMAIN}/spiffe-bridge"
UID_1, UID_2, UID_NONE = 2001, 2002, 2003
ID_1 = f"spiffe://{TRUST_DOMAIN}/ns/team1/sa/app"
ID_2 = f"spiffe://{TRUST_DOMAIN}/ns/team2/sa/app"
ROLE_1 = f"arn:aws:iam::{ACCOUNT}:role/team1-app"
ROLE_2 = f"arn:aws:iam::{ACCOUNT}:role/team2-app"
RULE = "team-aws"
RULE_GCP = "team-gcp"
GCP_PROJECT = "bridge-test"


def service_account(spiffe_id: str) -> str:
    """The service account the GCP rule renders for `spiffe_id` (and only it may use)."""
    ns, sa = spiffe_id.split("/ns/", 1)[1].split("/sa/")
    return f"{ns}-{sa}@{GCP_PROJECT}.iam.gserviceaccount.com"
CONFIGURED = "configured"


@dataclass
class Node:
    spire: SpireDeployment
    bridge: BridgeProcess
    workload_socket: str
    imds: tuple[str, int]
    grpc_socket: str
    container: tuple[str, int]
    gce: tuple[str, int]

    @property
    def imds_url(self) -> str:
        return f"http://{self.imds[0]}:{self.imds[1]}/"

    def subject_of(self, access_key_id: str) -> str:
        """The `sub` of the web identity token STS exchanged for these credentials."""
        issued = {c.access_key_id: c for c in self.spire.aws.issued}
        return issued[access_key_id].subject

    def role_of(self, access_key_id: str) -> str:
        return {c.access_key_id: c for c in self.spire.aws.issued}[access_key_id].role_arn

    def add_workload(self, uid: int, spiffe_id: str) -> None:
        """An entry for `uid` (any ID under the rule's pattern gets a role that trusts it
        only: `<ns>-<sa>`)."""
        self.spire.create_entry(spiffe_id, selectors=[f"unix:uid:{uid}"])
        ns, sa = spiffe_id.split("/ns/", 1)[1].split("/sa/")
        self.spire.aws.add_role(f"arn:aws:iam::{ACCOUNT}:role/{ns}-{sa}",
                                provider_url=self.spire.issuer, aud="sts.amazonaws.com",
                                sub=spiffe_id)
        self.spire.gcp.add_service_account(
            service_account(spiffe_id),
            workload_identity_users=[federated_principal(GCP_PROVIDER, spiffe_id)])


@contextlib.contextmanager
def broker_node(binaries: dict[str, Path]) -> Iterator[Node]:
    workdir = Path(tempfile.mkdtemp(prefix="sbb-", dir="/tmp"))
    public = Path(tempfile.mkdtemp(prefix="sbw-", dir="/tmp"))
    public.chmod(0o755)  # the workloads (other uids) reach the workload socket here
    out = Path(tempfile.mkdtemp(prefix="sb-out-", dir="/dev/shm"))
    (workdir / "mp").mkdir()
    wl.use_scratch(str(workdir / "mp"))
    spire = SpireDeployment(binaries, workdir, brokers=[BRIDGE_ID])
    bridge: BridgeProcess | None = None
    try:
        spire.start()
        spire.create_entry(BRIDGE_ID)
        spire.wait_for_identity(BRIDGE_ID)
        http, imds, container, gce = free_port(), free_port(), free_port(), free_port()
        doc: dict[str, Any] = {
            "workload_api": {"socket": spire.agent_socket_uri, "timeout": "5s"},
            "outputs": {"directory": str(out / "creds")},
            "http": {"address": f"127.0.0.1:{http}"},
            "grpc": {"socket": f"unix://{workdir}/bridge.sock"},
            "broker": {"socket": f"unix://{spire.broker_socket}",
                       "agent_id": f"spiffe://{TRUST_DOMAIN}/spire/agent/*",
                       "spiffe_id": BRIDGE_ID, "timeout": "3s"},
            "workloads": {"grpc_socket": f"unix://{public}/w.sock", "idle": "10s"},
            "metadata": {"imds": {"address": f"127.0.0.1:{imds}", "allowed_uids": "any"},
                         "container": {"address": f"127.0.0.1:{container}"},
                         "gce": {"address": f"127.0.0.1:{gce}", "allowed_uids": "any"}},
            "targets": [{"name": CONFIGURED, "spiffe_id": BRIDGE_ID,
                         "aws": {"role_arn": ROLE_ANY, "region": "us-east-1",
                                 "sts_endpoint": spire.aws.url}}],
            "workload_targets": [{
                "name": RULE,
                "match": f"spiffe://{TRUST_DOMAIN}/ns/{{ns}}/sa/{{sa}}",
                "aws": {"role_arn": f"arn:aws:iam::{ACCOUNT}:role/{{ns}}-{{sa}}",
                        "region": "us-east-1", "sts_endpoint": spire.aws.url},
                "serve": {"grpc": True, "metadata": ["imds", "container"]}}, {
                "name": RULE_GCP,
                "match": f"spiffe://{TRUST_DOMAIN}/ns/{{ns}}/sa/{{sa}}",
                "gcp": {"workload_identity_provider": GCP_PROVIDER,
                        "service_account": f"{{ns}}-{{sa}}@{GCP_PROJECT}.iam.gserviceaccount.com",
                        "sts_endpoint": spire.gcp.sts_url,
                        "iam_credentials_endpoint": spire.gcp.url},
                "serve": {"grpc": True, "metadata": ["gce"]}}],
        }
        config = workdir / "bridge.yaml"
        config.write_text(yaml.safe_dump(doc))
        bridge = BridgeProcess(config, f"127.0.0.1:{http}", workdir / "bridge.log").start()
        node = Node(spire, bridge, f"{public}/w.sock", ("127.0.0.1", imds),
                    f"{workdir}/bridge.sock", ("127.0.0.1", container), ("127.0.0.1", gce))
        node.add_workload(UID_1, ID_1)
        node.add_workload(UID_2, ID_2)
        wait_until(lambda: bridge.target(CONFIGURED)["state"] == "fresh", 30,
                   "the configured target")
        for uid in (UID_1, UID_2):  # the agent has synced their entries
            wait_until(lambda uid=uid: wl.run_as(uid, wl.grpc_get, node.workload_socket,
                                                 RULE)["code"] == "OK",
                       30, f"uid {uid}'s entry to reach the agent", interval=0.5)
        yield node
    finally:
        wl.shutdown()
        if bridge is not None:
            bridge.stop()
        spire.stop()
        for d in (workdir, public, out):
            shutil.rmtree(d, ignore_errors=True)
