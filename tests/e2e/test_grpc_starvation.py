"""Unauthenticated callers cannot starve authorized ones (issue 13, item 2), against the
real daemon process.

300 half-open `GetCredential` calls (headers sent, the request message never; no SVID)
over several connections: an allowed caller's `GetCredential`, `ListTargets` and the
gRPC health check are still answered, each within a second. grpc's own call limit
counted such calls from their headers; the bridge's budgets count a call only once its
request has arrived, and unary calls apart from watch streams.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bridge._proto.spiffebridge.v1 import credentials_pb2 as pb
from bridge._proto.spiffebridge.v1 import credentials_pb2_grpc as pb_grpc
from bridge.devstack import DevStack
from bridge.serving.grpc.receive import RECEIVE_DEADLINE
from tests.conftest import WriteConfig
from tests.support.configs import CALLER, aws_target
from tests.support.process import start_bridge, stop
from tests.support.wait import wait_for

pytestmark = pytest.mark.integration
HALF_OPEN = 300
CONNECTIONS = 4  # the daemon admits 128 open calls per connection
METHOD = "/spiffebridge.v1.CredentialService/GetCredential"


def _never(release: threading.Event) -> Iterator[pb.GetCredentialRequest]:
    release.wait(120)  # headers are out; the request message never comes
    return
    yield  # a generator


def test_half_open_unauthenticated_calls_do_not_starve_allowed_callers(
        stack: DevStack, write_config: WriteConfig, outdir: Path, short_dir: Path) -> None:
    config = write_config(targets=[aws_target(stack, "guarded", allowed_callers=[CALLER]),
                                   aws_target(stack, "open")])
    proc = start_bridge("run", "--config", str(config))
    socket = f"unix://{short_dir}/bridge.sock"
    release = threading.Event()
    channels = [grpc.insecure_channel(socket, options=[("grpc.use_local_subchannel_pool", 1)])
                for _ in range(CONNECTIONS)]
    pending = []
    try:
        wait_for((outdir / "aws" / "guarded.json").exists, "first credential")
        for i in range(HALF_OPEN):
            call = channels[i % CONNECTIONS].stream_unary(
                METHOD, request_serializer=pb.GetCredentialRequest.SerializeToString,
                response_deserializer=pb.GetCredentialResponse.FromString)
            pending.append(call.future(_never(release), timeout=120))
        time.sleep(2.0)  # every half-open call has reached the daemon by now
        assert not any(f.done() for f in pending), "a half-open call ended early"
        token = stack.authority.mint(CALLER, ["spiffe-bridge"], 300)
        with grpc.insecure_channel(socket) as channel:
            api = pb_grpc.CredentialServiceStub(channel)
            health = health_pb2_grpc.HealthStub(channel)
            for name, call in (
                    ("GetCredential", lambda: api.GetCredential(
                        pb.GetCredentialRequest(target="guarded"), timeout=1.0,
                        metadata=(("authorization", f"Bearer {token}"),))),
                    ("ListTargets", lambda: api.ListTargets(pb.ListTargetsRequest(),
                                                            timeout=1.0)),
                    ("Health", lambda: health.Check(health_pb2.HealthCheckRequest(),
                                                    timeout=1.0))):
                started = time.monotonic()
                answer = call()
                assert answer is not None, name
                assert time.monotonic() - started < 1.0, name
    finally:
        release.set()
        for f in pending:
            f.cancel()
        for channel in channels:
            channel.close()
        code, _, err = stop(proc)
    assert code == 0, err[-2000:]
    assert "Traceback" not in err


def _nothing() -> Iterator[pb.GetCredentialRequest]:
    return
    yield  # a generator that half-closes at once


def test_a_request_message_that_never_comes_ends_the_call(
        stack: DevStack, write_config: WriteConfig, outdir: Path, short_dir: Path) -> None:
    """Half-open calls are bounded in time too: the daemon ends each one whose request
    message has not arrived within RECEIVE_DEADLINE of its headers, and one that
    half-closes without a request, with codes that say so; the health Watch stream
    (which writes through its context) still works behind the same interceptor."""
    config = write_config(targets=[aws_target(stack, "open")])
    proc = start_bridge("run", "--config", str(config))
    socket = f"unix://{short_dir}/bridge.sock"
    release = threading.Event()
    try:
        wait_for((outdir / "aws" / "open.json").exists, "first credential")
        with grpc.insecure_channel(socket) as channel:
            half_open = channel.stream_unary(
                METHOD, request_serializer=pb.GetCredentialRequest.SerializeToString,
                response_deserializer=pb.GetCredentialResponse.FromString)
            watch = channel.stream_stream(
                "/spiffebridge.v1.CredentialService/WatchCredential",
                request_serializer=pb.GetCredentialRequest.SerializeToString,
                response_deserializer=pb.WatchCredentialResponse.FromString)
            started = time.monotonic()
            futures = [half_open.future(_never(release), timeout=60) for _ in range(20)]
            stream = watch(_never(release), timeout=60)
            for future in futures:
                with pytest.raises(grpc.RpcError) as ended:
                    future.result(timeout=30)
                assert ended.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
                assert "request message did not arrive" in (ended.value.details() or "")
            with pytest.raises(grpc.RpcError) as stream_ended:
                next(iter(stream))
            assert stream_ended.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            elapsed = time.monotonic() - started
            assert RECEIVE_DEADLINE - 0.5 < elapsed < RECEIVE_DEADLINE + 5.0, elapsed

            with pytest.raises(grpc.RpcError) as empty:
                half_open(_nothing(), timeout=10)
            assert empty.value.code() == grpc.StatusCode.INVALID_ARGUMENT

            answer = pb_grpc.CredentialServiceStub(channel).GetCredential(
                pb.GetCredentialRequest(target="open"), timeout=5)
            assert answer.credential.target == "open"
            updates = health_pb2_grpc.HealthStub(channel).Watch(
                health_pb2.HealthCheckRequest(), timeout=5)
            assert next(iter(updates)).status == health_pb2.HealthCheckResponse.SERVING
            updates.cancel()
    finally:
        release.set()
        code, _, err = stop(proc)
    assert code == 0, err[-2000:]
    assert "Traceback" not in err
