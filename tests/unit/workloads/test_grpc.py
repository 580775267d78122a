"""The workload gRPC socket: only connections through its hop have a caller; the rule
and the caller go to the lifecycle, its refusals become gRPC codes."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from prometheus_client import CollectorRegistry

from bridge._proto.spiffebridge.v1 import credentials_pb2 as pb
from bridge._proto.spiffebridge.v1 import credentials_pb2_grpc as pb_grpc
from bridge.clouds.aws.material import AwsCredentials
from bridge.config import parse_config
from bridge.metrics import Metrics
from bridge.model import Credential, State, TargetStatus
from bridge.serving.processes import CallerProcess
from bridge.workloads.grpc import WorkloadGrpcService
from bridge.workloads.lifecycle import Granted, WorkloadError
from tests.unit.workloads.test_lifecycle import DOC, RULE


class FakeCredentials:
    """Grants uid 0's callers, refuses everyone else; records who asked."""

    def __init__(self, rule: Any) -> None:
        self.rule = rule
        self.asked: list[tuple[int, str]] = []
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def submit(self, caller: CallerProcess, rule: str, *,
               timeout: float) -> concurrent.futures.Future[Granted]:
        self.asked.append((caller.pid, rule))

        async def answer() -> Granted:
            if caller.pid != os.getpid():
                raise WorkloadError("not you", kind="denied", reason="no_identity")
            credential = Credential(target=RULE, issued_at=0, expires_at=2e9,
                                    svid_expires_at=2e9, deadline=1e12, received=0,
                                    material=AwsCredentials("AKIAFAKE", "s", "t", 2e9))
            status = TargetStatus(name=RULE, state=State.FRESH, credential=credential,
                                  delivered=True)
            return Granted(self.rule, "spiffe://td/ns/me", status)
        return asyncio.run_coroutine_threadsafe(answer(), self.loop)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


@pytest.fixture
def service(tmp_path: Path) -> Iterator[tuple[WorkloadGrpcService, FakeCredentials, str]]:
    config = parse_config(yaml.safe_dump(DOC), env={})
    fake = FakeCredentials(config.workload_targets[0])
    path = str(tmp_path / "w.sock")
    svc = WorkloadGrpcService(f"unix://{path}", mode=0o666, rules=config.workload_targets,
                              credentials=fake, metrics=Metrics(CollectorRegistry()),
                              request_timeout=5, now=lambda: 0.0)  # type: ignore[arg-type]
    svc.start()
    yield svc, fake, path
    svc.stop()
    fake.close()


def _get(target: str, rule: str = RULE) -> pb.GetCredentialResponse:
    with grpc.insecure_channel(target) as channel:
        return pb_grpc.CredentialServiceStub(channel).GetCredential(
            pb.GetCredentialRequest(workload_target=rule), timeout=10)


def test_a_caller_through_the_socket_is_asked_about_as_itself(
        service: tuple[WorkloadGrpcService, FakeCredentials, str]) -> None:
    _, fake, path = service
    got = _get(f"unix:{path}")
    assert got.credential.spiffe_id == "spiffe://td/ns/me"
    assert got.credential.aws.access_key_id == "AKIAFAKE"
    assert fake.asked == [(os.getpid(), RULE)]
    assert os.stat(path).st_mode & 0o777 == 0o666


def test_a_direct_connection_to_the_inner_server_has_no_caller(
        service: tuple[WorkloadGrpcService, FakeCredentials, str]) -> None:
    """The loopback port behind the hop is reachable, but a connection that did not
    come through the hop names nobody: refused without asking the lifecycle."""
    svc, fake, _ = service
    with pytest.raises(grpc.RpcError) as info:
        _get(f"127.0.0.1:{svc._port}")
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert fake.asked == []


@pytest.mark.parametrize(("request_fields", "code"), [
    ({"target": "configured"}, grpc.StatusCode.INVALID_ARGUMENT),
    ({"workload_target": "nope"}, grpc.StatusCode.NOT_FOUND),
], ids=["a-configured-target", "an-unknown-rule"])
def test_requests_that_are_not_for_a_served_rule(
        service: tuple[WorkloadGrpcService, FakeCredentials, str],
        request_fields: dict[str, str], code: grpc.StatusCode) -> None:
    _, fake, path = service
    with grpc.insecure_channel(f"unix:{path}") as channel, \
            pytest.raises(grpc.RpcError) as info:
        pb_grpc.CredentialServiceStub(channel).GetCredential(
            pb.GetCredentialRequest(**request_fields), timeout=10)
    assert info.value.code() == code
    assert fake.asked == []
