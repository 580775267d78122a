"""An open `WatchCredential` stream does not outlive its authorization (issue 13, item 1),
against the real daemon process.

A stream opened with a valid caller SVID ends, and gets no further message, once that
SVID expires, once the key that signed it leaves the bundle, or once a reload drops the
caller from `allowed_callers`; `bridge.client` renews its own watch by reopening the
stream with a current SVID.
"""

from __future__ import annotations

import queue
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
import yaml

from bridge._proto.spiffebridge.v1 import credentials_pb2 as pb
from bridge._proto.spiffebridge.v1 import credentials_pb2_grpc as pb_grpc
from bridge.client import BridgeClient
from bridge.devstack import DevStack
from tests.conftest import WriteConfig
from tests.support.configs import CALLER, aws_target
from tests.support.process import start_bridge, stop
from tests.support.wait import wait_for

pytestmark = pytest.mark.integration
AUDIENCE = "spiffe-bridge"
ENDS_WITHIN = 3.0  # seconds after authorization lapses (the stream re-checks every 1 s)


@dataclass
class Api:
    stub: pb_grpc.CredentialServiceStub
    socket: str
    config: Path
    proc: object


@pytest.fixture
def api(stack: DevStack, write_config: WriteConfig, outdir: Path,
        short_dir: Path) -> Iterator[Api]:
    config = write_config(targets=[aws_target(stack, "guarded", allowed_callers=[CALLER])])
    proc = start_bridge("run", "--config", str(config))
    socket = f"unix://{short_dir}/bridge.sock"
    try:
        wait_for((outdir / "aws" / "guarded.json").exists, "first credential")
        with grpc.insecure_channel(socket) as channel:
            yield Api(pb_grpc.CredentialServiceStub(channel), socket, config, proc)
    finally:
        code, _, err = stop(proc)  # type: ignore[arg-type]
    assert code == 0, err
    assert "Traceback" not in err


def _watch(api: Api, token: str) -> tuple[queue.Queue[object], grpc.Future]:  # type: ignore[name-defined]
    """Open a watch; its messages and its final status go to the queue."""
    out: queue.Queue[object] = queue.Queue()
    stream = api.stub.WatchCredential(pb.WatchCredentialRequest(target="guarded"),
                                      metadata=(("authorization", f"Bearer {token}"),),
                                      timeout=60)

    def pump() -> None:
        try:
            for message in stream:
                out.put(message)
            out.put(grpc.StatusCode.OK)
        except grpc.RpcError as exc:
            out.put(exc.code())  # type: ignore[attr-defined]

    threading.Thread(target=pump, daemon=True).start()
    return out, stream


def _ends_with(out: queue.Queue[object], code: grpc.StatusCode, within: float) -> None:
    deadline = time.monotonic() + within
    while True:
        item = out.get(timeout=max(0.01, deadline - time.monotonic()))
        if isinstance(item, grpc.StatusCode):
            assert item is code
            return
        assert time.monotonic() < deadline, "a message after authorization lapsed"


def test_a_watch_ends_when_the_caller_svid_expires(api: Api, stack: DevStack) -> None:
    token = stack.authority.mint(CALLER, [AUDIENCE], 4)
    out, stream = _watch(api, token)
    assert isinstance(out.get(timeout=10), pb.WatchCredentialResponse)  # served while valid
    time.sleep(3.0)
    assert out.empty()  # still open, nothing new
    _ends_with(out, grpc.StatusCode.UNAUTHENTICATED, within=1.0 + ENDS_WITHIN)
    stream.cancel()


def test_a_watch_ends_when_its_signing_key_is_revoked(api: Api, stack: DevStack) -> None:
    old = stack.authority.active_key.kid
    token = stack.authority.mint(CALLER, [AUDIENCE], 300)
    out, stream = _watch(api, token)
    assert isinstance(out.get(timeout=10), pb.WatchCredentialResponse)
    stack.authority.rotate()
    stack.authority.revoke(old)  # the agent streams the bundle without it
    _ends_with(out, grpc.StatusCode.UNAUTHENTICATED, within=ENDS_WITHIN + 2)
    stream.cancel()


def test_a_watch_ends_when_a_reload_drops_the_caller(api: Api, stack: DevStack) -> None:
    token = stack.authority.mint(CALLER, [AUDIENCE], 300)
    out, stream = _watch(api, token)
    assert isinstance(out.get(timeout=10), pb.WatchCredentialResponse)
    doc = yaml.safe_load(api.config.read_text())
    doc["targets"][0]["allowed_callers"] = ["spiffe://example.org/someone-else"]
    api.config.write_text(yaml.safe_dump(doc))
    api.proc.send_signal(signal.SIGHUP)  # type: ignore[attr-defined]
    _ends_with(out, grpc.StatusCode.PERMISSION_DENIED, within=ENDS_WITHIN + 5)
    stream.cancel()


def test_bridge_client_renews_its_watch_with_a_current_svid(api: Api, stack: DevStack) -> None:
    """Three-second SVIDs: the stream is ended at each expiry and reopened by the client
    with a new SVID (the first message of each new stream is the current value)."""
    minted: list[float] = []

    def svid() -> str:
        minted.append(time.monotonic())
        return stack.authority.mint(CALLER, [AUDIENCE], 3)

    got: list[float] = []
    errors: list[BaseException] = []

    def watch() -> None:
        with BridgeClient(api.socket, svid=svid, timeout=10) as client:
            try:
                for _ in client.watch("guarded"):
                    got.append(time.monotonic())
                    if len(got) >= 4:
                        return
            except BaseException as exc:
                errors.append(exc)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    thread.join(30)
    assert not thread.is_alive(), f"only {len(got)} messages in 30 s"
    assert errors == []
    assert len(minted) >= 4  # one SVID per stream: renewed three times
