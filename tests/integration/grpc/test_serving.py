"""The gRPC server as a server: watch fan-out, reflection for third-party clients, health,
the socket's mode, shutdown, and the CLI commands that read through it."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import stat
import subprocess
import time
from pathlib import Path
from urllib.parse import urlsplit

import grpc
import pytest
from google.protobuf import descriptor_pool, message_factory
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from bridge._proto.spiffebridge.v1 import credentials_pb2 as pb
from bridge._proto.spiffebridge.v1 import credentials_pb2_grpc as pb_grpc
from bridge.client import BridgeClient
from bridge.clouds.aws import AwsCredentials
from bridge.devstack import DevStack
from bridge.model import State
from tests.support.configs import CALLER, aws_target
from tests.support.process import bridge_cli
from tests.support.require import unavailable
from tests.support.running import StartBridge

pytestmark = pytest.mark.integration
GRPCURL_DIR = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / (
    "spiffe-bridge/tools/grpcurl/bin")
WATCHERS = 100


def test_watch_delivers_a_refresh_to_100_watchers_within_a_second(
        start_bridge: StartBridge, stack: DevStack, socket_uri: str) -> None:
    """100 concurrent WatchCredential streams each get the current value at once, then the
    next refresh; the slowest arrives < 1 s after the store published it."""
    bridge = start_bridge([aws_target(stack, "demo")])
    published: list[float] = []
    bridge.daemon.store.subscribe(lambda _n, _s: published.append(time.monotonic()))

    async def watch_all() -> tuple[list[float], str, set[str]]:
        async with grpc.aio.insecure_channel(socket_uri) as channel:
            stub = pb_grpc.CredentialServiceStub(channel)
            calls = [stub.WatchCredential(pb.WatchCredentialRequest(target="demo"))
                     for _ in range(WATCHERS)]
            firsts = await asyncio.gather(*(c.read() for c in calls))
            first_keys = {f.credential.aws.access_key_id for f in firsts}
            assert len(first_keys) == 1
            refreshed = asyncio.get_running_loop().run_in_executor(None, bridge.refresh_all)

            async def next_key(call: grpc.aio.UnaryStreamCall) -> tuple[float, str]:
                response = await asyncio.wait_for(call.read(), 10)
                return time.monotonic(), response.credential.aws.access_key_id
            got = await asyncio.gather(*(next_key(c) for c in calls))
            await refreshed
            for c in calls:
                c.cancel()
            return [t for t, _ in got], first_keys.pop(), {k for _, k in got}

    arrivals, old_key, new_keys = asyncio.run(watch_all())
    assert len(arrivals) == WATCHERS
    assert new_keys
    assert old_key not in new_keys
    assert len(new_keys) == 1
    assert published, "the refresh never reached the store"
    lag = max(arrivals) - published[-1]
    assert lag < 1.0, f"slowest watcher got the refresh {lag:.3f}s after it"


def test_watch_reports_expiry_without_material(start_bridge: StartBridge, stack: DevStack,
                                               socket_uri: str) -> None:
    """A state change to expired reaches watchers as STATE_EXPIRED and no material, and
    GetCredential then answers UNAVAILABLE."""
    bridge = start_bridge([aws_target(stack, "demo")])
    with BridgeClient(socket_uri) as client:
        stream = client.watch("demo")
        assert next(stream).state is State.FRESH
        held = bridge.daemon.store.get("demo")
        assert held is not None
        assert held.credential is not None
        bridge.daemon.store.expire("demo", held.credential.deadline + 1)
        expired = next(stream)
        stream.close()
        assert expired.state is State.EXPIRED
        assert expired.material is None
        assert expired.expires_at is None
        with pytest.raises(Exception, match="UNAVAILABLE"):
            client.get_credential("demo")


def test_third_party_client_through_reflection_only(start_bridge: StartBridge,
                                                    socket_uri: str) -> None:
    """grpcio-reflection's descriptor database: no generated code on the client side."""
    start_bridge()
    with grpc.insecure_channel(socket_uri) as channel:
        database = ProtoReflectionDescriptorDatabase(channel)
        services = set(database.get_services())
        assert {"spiffebridge.v1.CredentialService", "grpc.health.v1.Health"} <= services
        pool = descriptor_pool.DescriptorPool(database)
        service = pool.FindServiceByName("spiffebridge.v1.CredentialService")
        method = service.methods_by_name["GetCredential"]
        request_class = message_factory.GetMessageClass(method.input_type)
        response_class = message_factory.GetMessageClass(method.output_type)
        call = channel.unary_unary(
            "/spiffebridge.v1.CredentialService/GetCredential",
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=response_class.FromString)
        response = call(request_class(target="open"), timeout=5)
    assert response.credential.target == "open"
    assert response.credential.aws.access_key_id


def test_grpcurl_lists_describes_and_calls(start_bridge: StartBridge, socket_uri: str,
                                           stack: DevStack) -> None:
    """grpcurl, a Go client that knows nothing of our proto, through reflection."""
    grpcurl = shutil.which("grpcurl") or str(GRPCURL_DIR / "grpcurl")
    if not Path(grpcurl).exists():
        message = "grpcurl not found (install: tests/tools/install-grpcurl.sh)"
        unavailable(message)
    bridge = start_bridge([aws_target(stack, "open"),
                           aws_target(stack, "guarded", allowed_callers=[CALLER])])
    path = socket_uri  # grpcurl 1.9.3's `-unix` flag dials tcp; the unix:// form works
    base = [grpcurl, "-plaintext", "-max-time", "10"]

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*base, *args], capture_output=True, text=True, timeout=30,
                              check=False)

    listed = run(path, "list")
    assert "spiffebridge.v1.CredentialService" in listed.stdout, listed.stderr
    described = run(path, "describe", "spiffebridge.v1.CredentialService")
    assert "rpc WatchCredential" in described.stdout, described.stderr
    got = run("-d", '{"target": "open"}', path, "spiffebridge.v1.CredentialService/GetCredential")
    assert got.returncode == 0, got.stderr
    body = json.loads(got.stdout)
    held = bridge.daemon.store.get("open")
    assert held is not None
    assert held.credential is not None
    assert isinstance(held.credential.material, AwsCredentials)
    assert body["credential"].get("aws", {}).get("access_key_id") == (
        held.credential.material.access_key_id), body
    token = stack.authority.mint(CALLER, ["spiffe-bridge"], 300)
    guarded = run("-H", f"authorization: Bearer {token}", "-d", '{"target": "guarded"}', path,
                  "spiffebridge.v1.CredentialService/GetCredential")
    assert guarded.returncode == 0, guarded.stderr
    denied = run("-d", '{"target": "guarded"}', path,
                 "spiffebridge.v1.CredentialService/GetCredential")
    assert denied.returncode != 0
    assert "Unauthenticated" in denied.stderr
    health = run(path, "grpc.health.v1.Health/Check")
    assert json.loads(health.stdout)["status"] == "SERVING"


def test_health_reports_the_service_ready(start_bridge: StartBridge, stack: DevStack,
                                          socket_uri: str) -> None:
    """Overall SERVING; the API's own service goes NOT_SERVING when a target expires."""
    bridge = start_bridge([aws_target(stack, "demo")])
    with grpc.insecure_channel(socket_uri) as channel:
        stub = health_pb2_grpc.HealthStub(channel)

        def check(service: str) -> int:
            return int(stub.Check(health_pb2.HealthCheckRequest(service=service),
                                  timeout=5).status)
        serving = health_pb2.HealthCheckResponse.SERVING
        assert check("") == serving
        assert check("spiffebridge.v1.CredentialService") == serving
        held = bridge.daemon.store.get("demo")
        assert held is not None
        assert held.credential is not None
        bridge.daemon.store.expire("demo", held.credential.deadline + 1)
        deadline = time.monotonic() + 5
        while check("spiffebridge.v1.CredentialService") == serving:
            assert time.monotonic() < deadline, "health never went NOT_SERVING"
            time.sleep(0.02)
        assert check("") == serving


def test_socket_mode_and_stale_socket(start_bridge: StartBridge, stack: DevStack,
                                      socket_uri: str) -> None:
    """The socket gets `socket_mode`; a socket left by a crashed run is replaced."""
    path = Path(urlsplit(socket_uri).path)
    path.parent.mkdir(parents=True, exist_ok=True)
    import socket as sockets
    with sockets.socket(sockets.AF_UNIX) as leftover:
        leftover.bind(str(path))  # a dead socket file, as after SIGKILL
    start_bridge([aws_target(stack, "demo")], grpc={"socket_mode": "0640"})
    assert stat.S_ISSOCK(path.lstat().st_mode)
    assert stat.S_IMODE(path.lstat().st_mode) == 0o640
    with BridgeClient(socket_uri) as client:
        assert isinstance(client.get_credential("demo").material, AwsCredentials)


def test_refuses_to_replace_a_file_that_is_not_a_socket(stack: DevStack, short_dir: Path,
                                                        start_bridge: StartBridge,
                                                        socket_uri: str) -> None:
    path = Path(urlsplit(socket_uri).path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("precious")
    with pytest.raises(Exception, match="is not a socket"):
        start_bridge([aws_target(stack, "demo")])
    assert path.read_text() == "precious"


def test_shutdown_ends_watch_streams_and_removes_the_socket(
        start_bridge: StartBridge, stack: DevStack, socket_uri: str) -> None:
    bridge = start_bridge([aws_target(stack, "demo")], grpc={"shutdown_grace": "10s"})
    with BridgeClient(socket_uri) as client:
        stream = client.watch("demo")
        next(stream)
        started = time.monotonic()
        bridge.close()
        assert list(stream) == []  # the stream ended cleanly, not with an error
        assert time.monotonic() - started < 5, "watchers held shutdown to the grace period"
    assert not Path(urlsplit(socket_uri).path).exists()


def test_cli_credential_process_and_status_read_through_grpc(
        start_bridge: StartBridge, stack: DevStack, short_dir: Path) -> None:
    """`credential-process` and `status` against the running daemon; the guarded target
    needs this process's own JWT-SVID, fetched from the (dev) Workload API."""
    bridge = start_bridge([aws_target(stack, "open"),
                           aws_target(stack, "guarded",
                                      allowed_callers=["spiffe://example.org/demo"])])
    config = str(short_dir / "bridge.yaml")
    anonymous = bridge_cli("credential-process", "--target", "guarded", "--config", config,
                           timeout=30)
    assert anonymous.returncode == 1
    assert "UNAUTHENTICATED" in anonymous.stderr
    assert "Traceback" not in anonymous.stderr
    proven = bridge_cli("credential-process", "--target", "guarded", "--config", config,
                        "--workload-api", stack.workload_socket_uri, timeout=30)
    assert proven.returncode == 0, proven.stderr
    doc = json.loads(proven.stdout)
    held = bridge.daemon.store.get("guarded")
    assert held is not None
    assert held.credential is not None
    assert isinstance(held.credential.material, AwsCredentials)
    assert doc["Version"] == 1
    assert doc["AccessKeyId"] == held.credential.material.access_key_id
    assert doc["SessionToken"] == held.credential.material.session_token
    status = bridge_cli("status", "--config", config, "--workload-api",
                        stack.workload_socket_uri, timeout=30)
    assert status.returncode == 0, status.stderr
    lines = status.stdout.splitlines()
    assert lines[0].split()[:3] == ["TARGET", "CLOUD", "STATE"]
    assert {line.split()[0]: line.split()[2] for line in lines[1:]} == {
        "open": "fresh", "guarded": "fresh"}
