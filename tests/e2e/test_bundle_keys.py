"""Bundle keys the bridge cannot use (issue 13, item 10), against the daemon process: a
`kty: oct` key under the signing key's own kid and a key without kid are skipped and
counted; a malformed document for another trust domain does not stop the watch, so a
key revoked afterwards stops authenticating callers at once."""

from __future__ import annotations

import json
import re
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from bridge._proto.spiffebridge.v1 import credentials_pb2 as pb
from bridge._proto.spiffebridge.v1 import credentials_pb2_grpc as pb_grpc
from bridge.devstack import DevStack
from tests.conftest import WriteConfig
from tests.support.configs import CALLER, aws_target
from tests.support.process import start_bridge, stop, with_http_port
from tests.support.wait import wait_for

pytestmark = pytest.mark.integration
TRUST_DOMAIN = "example.org"


def _metric(port: int, name: str, reason: str) -> float:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
            page = r.read().decode()
    except OSError:
        return -1.0
    m = re.search(rf'^{name}\{{reason="{reason}"\}} (\S+)$', page, re.MULTILINE)
    return float(m.group(1)) if m else -1.0


def _get(api: pb_grpc.CredentialServiceStub, token: str) -> grpc.StatusCode:
    try:
        api.GetCredential(pb.GetCredentialRequest(target="guarded"),
                          metadata=(("authorization", f"Bearer {token}"),), timeout=10)
    except grpc.RpcError as exc:
        return exc.code()  # type: ignore[no-any-return, attr-defined]
    return grpc.StatusCode.OK


@pytest.fixture
def running(stack: DevStack, write_config: WriteConfig, outdir: Path,
            short_dir: Path) -> Iterator[tuple[pb_grpc.CredentialServiceStub, int, Any]]:
    config = write_config(targets=[aws_target(stack, "guarded", allowed_callers=[CALLER])])
    port = with_http_port(config)
    proc = start_bridge("run", "--config", str(config))
    try:
        wait_for((outdir / "aws" / "guarded.json").exists, "first credential")
        wait_for((short_dir / "bridge.sock").exists, "the gRPC socket")
        with grpc.insecure_channel(f"unix://{short_dir}/bridge.sock") as channel:
            yield pb_grpc.CredentialServiceStub(channel), port, proc
    finally:
        code, _, err = stop(proc)
    assert code == 0, err
    assert "Traceback" not in err


def test_unusable_keys_are_skipped_counted_and_watching_goes_on(
        stack: DevStack, running: tuple[pb_grpc.CredentialServiceStub, int, Any]) -> None:
    api, port, proc = running
    honest: dict[str, Any] = stack.authority.spiffe_bundle()
    kid = honest["keys"][0]["kid"]
    token = stack.authority.mint(CALLER, ["spiffe-bridge"], 300)
    assert _get(api, token) is grpc.StatusCode.OK

    # An HMAC key under the real key's kid (after it: py-spiffe let it win), and one
    # without kid: the real key keeps verifying, both are counted.
    crafted = {"keys": [*honest["keys"], {"kty": "oct", "k": "c2VjcmV0LWtleQ", "kid": kid},
                        {"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA"}]}
    stack.workload.faults.replace_bundles({TRUST_DOMAIN: json.dumps(crafted).encode()})
    wait_for(lambda: _metric(port, "spiffe_bridge_bundle_keys_skipped_total",
                             "unsupported_kty") >= 1, "the oct key counted")
    assert _metric(port, "spiffe_bridge_bundle_keys_skipped_total", "no_kid") >= 1
    fresh = stack.authority.mint(CALLER, ["spiffe-bridge"], 300)
    assert _get(api, fresh) is grpc.StatusCode.OK
    assert proc.poll() is None

    # A malformed document for another trust domain: skipped, the watch goes on...
    stack.workload.faults.replace_bundles({TRUST_DOMAIN: json.dumps(honest).encode(),
                                           "other.example": b"{not json"})
    wait_for(lambda: _metric(port, "spiffe_bridge_bundle_keys_skipped_total",
                             "malformed_bundle") >= 1, "the malformed document counted")
    assert _get(api, stack.authority.mint(CALLER, ["spiffe-bridge"], 300)) is (
        grpc.StatusCode.OK)
    # ... so revoking the key (the agent now sends a bundle without it) is seen at once.
    stack.workload.faults.replace_bundles({TRUST_DOMAIN: json.dumps({"keys": []}).encode()})
    revoked = stack.authority.mint(CALLER, ["spiffe-bridge"], 300)
    wait_for(lambda: _get(api, revoked) is grpc.StatusCode.UNAUTHENTICATED,
             "the revoked key to stop authenticating", timeout=10)
    assert proc.poll() is None
