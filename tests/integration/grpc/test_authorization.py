"""Caller authorization: a target's `allowed_callers` against the caller's own JWT-SVID,
verified with the JWT bundles the bridge receives from the (dev) Workload API."""

from __future__ import annotations

import time

import grpc
import pytest

from bridge._proto.spiffebridge.v1 import credentials_pb2 as pb
from bridge._proto.spiffebridge.v1 import credentials_pb2_grpc as pb_grpc
from bridge.client import ApiError, BridgeClient
from bridge.clouds.aws import AwsCredentials
from bridge.clouds.gcp import GcpToken
from bridge.devstack import DevStack
from tests.support.configs import CALLER, aws_target
from tests.support.running import RunningBridge, StartBridge
from tests.support.wait import wait_for

pytestmark = pytest.mark.integration


def svid(stack: DevStack, sub: str = CALLER, audience: str = "spiffe-bridge",
         **kw: object) -> str:
    return stack.authority.mint(sub, [audience], 300, **kw)  # type: ignore[arg-type]


def secrets_of(bridge: RunningBridge) -> list[str]:
    found: list[str] = []
    for status in bridge.daemon.store.snapshot().values():
        if status.credential is not None:
            found += status.credential.secrets()
    assert found
    return found


def raw_get(socket_uri: str, target: str, token: str | None) -> grpc.RpcError | pb.Credential:
    """GetCredential through a bare stub, so the test sees the status and trailers as sent."""
    metadata = (("authorization", f"Bearer {token}"),) if token is not None else ()
    with grpc.insecure_channel(socket_uri) as channel:
        stub = pb_grpc.CredentialServiceStub(channel)
        try:
            return stub.GetCredential(pb.GetCredentialRequest(target=target), timeout=5,
                                      metadata=metadata).credential
        except grpc.RpcError as exc:
            return exc


def test_allowed_caller_gets_the_credential(start_bridge: StartBridge, stack: DevStack,
                                            socket_uri: str) -> None:
    bridge = start_bridge()
    with BridgeClient(socket_uri, svid=lambda: svid(stack)) as client:
        served = client.get_credential("guarded")
        gcp = client.get_credential("guarded-gcp")
    held = bridge.daemon.store.get("guarded")
    assert held is not None
    assert held.credential is not None
    assert isinstance(held.credential.material, AwsCredentials)
    assert isinstance(served.material, AwsCredentials)
    assert served.material.access_key_id == held.credential.material.access_key_id
    assert served.material.session_token == held.credential.material.session_token
    assert served.expires_at == int(held.credential.expires_at)
    assert isinstance(gcp.material, GcpToken)
    assert gcp.material.access_token.startswith("ya29.")


def test_prefix_pattern_matches_only_below_the_path(start_bridge: StartBridge,
                                                    stack: DevStack, socket_uri: str) -> None:
    """`spiffe://example.org/ns/apps/*` admits .../ns/apps/x, not .../ns/apps-evil/x."""
    start_bridge()
    inside = BridgeClient(socket_uri, svid=lambda: svid(stack, "spiffe://example.org/ns/apps/x"))
    outside = BridgeClient(socket_uri,
                           svid=lambda: svid(stack, "spiffe://example.org/ns/apps-evil/x"))
    with inside, outside:
        assert isinstance(inside.get_credential("guarded-gcp").material, GcpToken)
        with pytest.raises(ApiError) as denied:
            outside.get_credential("guarded-gcp")
    assert denied.value.code == "PERMISSION_DENIED"


def test_valid_svid_not_in_the_list_is_permission_denied(
        start_bridge: StartBridge, stack: DevStack, socket_uri: str) -> None:
    bridge = start_bridge()
    stranger = svid(stack, "spiffe://example.org/ns/other/sa/x")
    result = raw_get(socket_uri, "guarded", stranger)
    assert isinstance(result, grpc.RpcError)
    assert result.code() is grpc.StatusCode.PERMISSION_DENIED
    assert "spiffe://example.org/ns/other/sa/x" in (result.details() or "")
    _assert_no_material(result, secrets_of(bridge), stranger)


@pytest.mark.parametrize("case", [
    "no_svid", "expired", "wrong_audience", "foreign_signed", "foreign_trust_domain",
    "not_a_jwt", "unsigned_alg_none", "not_bearer",
])
def test_unauthenticated_callers(case: str, start_bridge: StartBridge, stack: DevStack,
                                 socket_uri: str) -> None:
    """Every way of failing to prove an identity is UNAUTHENTICATED, with no material."""
    bridge = start_bridge()
    now = int(time.time())
    token: str | None
    if case == "no_svid":
        token = None
    elif case == "expired":
        token = stack.authority.mint(CALLER, ["spiffe-bridge"], 60, iat=now - 3600)
    elif case == "wrong_audience":
        token = svid(stack, audience="sts.amazonaws.com")
    elif case == "foreign_signed":  # same trust domain and kid, a key the bundle lacks
        token = stack.authority.impostor().mint(CALLER, ["spiffe-bridge"], 300)
    elif case == "foreign_trust_domain":
        token = svid(stack, "spiffe://evil.example/ns/apps/sa/reader")
    elif case == "not_a_jwt":
        token = "not.a.jwt"
    elif case == "unsigned_alg_none":
        header, payload, _ = svid(stack).split(".")
        token = f"eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{payload}."
        del header
    else:
        token = None
    metadata_token = token
    if case == "not_bearer":
        with grpc.insecure_channel(socket_uri) as channel:
            stub = pb_grpc.CredentialServiceStub(channel)
            with pytest.raises(grpc.RpcError) as caught:
                stub.GetCredential(pb.GetCredentialRequest(target="guarded"), timeout=5,
                                   metadata=(("authorization", f"Basic {svid(stack)}"),))
        result: grpc.RpcError | pb.Credential = caught.value
    else:
        result = raw_get(socket_uri, "guarded", metadata_token)
    assert isinstance(result, grpc.RpcError), result
    assert result.code() is grpc.StatusCode.UNAUTHENTICATED, result.details()
    _assert_no_material(result, secrets_of(bridge), token)


def test_list_targets_shows_only_what_the_caller_may_read(
        start_bridge: StartBridge, stack: DevStack, socket_uri: str) -> None:
    start_bridge()
    with BridgeClient(socket_uri) as anonymous:
        assert [t.name for t in anonymous.list_targets()] == ["open"]
    with BridgeClient(socket_uri, svid=lambda: svid(stack)) as caller:
        listed = caller.list_targets()
    assert [(t.name, t.cloud, t.state.value) for t in listed] == [
        ("open", "aws", "fresh"), ("guarded", "aws", "fresh"), ("guarded-gcp", "gcp", "fresh")]
    assert all(t.expires_at and t.expires_at > time.time() for t in listed)
    with BridgeClient(socket_uri,
                      svid=lambda: svid(stack, "spiffe://example.org/ns/apps/y")) as other:
        assert [t.name for t in other.list_targets()] == ["open", "guarded-gcp"]
    with BridgeClient(socket_uri, svid=lambda: svid(stack, audience="nope")) as bad, \
            pytest.raises(ApiError) as caught:
        bad.list_targets()
    assert caught.value.code == "UNAUTHENTICATED"


def test_open_target_needs_no_svid(start_bridge: StartBridge, socket_uri: str) -> None:
    """Without `allowed_callers`, the socket's file permissions are the only gate."""
    start_bridge()
    with BridgeClient(socket_uri) as client:
        assert isinstance(client.get_credential("open").material, AwsCredentials)


def test_key_rotation_is_followed_and_a_removed_key_stops_validating(
        start_bridge: StartBridge, stack: DevStack, socket_uri: str) -> None:
    """SVIDs from a new key validate once the bundle carries it; after the old key is
    revoked (dropped from the bundle), a token it signed is refused, even one that the
    bridge had already accepted (no stale cache)."""
    start_bridge()
    old_token = svid(stack)
    with BridgeClient(socket_uri, svid=lambda: old_token) as client:
        assert isinstance(client.get_credential("guarded").material, AwsCredentials)
    old_kid = stack.authority.active_kid
    stack.rotate_keys()
    with BridgeClient(socket_uri, svid=lambda: svid(stack)) as client:
        wait_for(lambda: isinstance(client.get_credential("guarded").material, AwsCredentials),
                 "the rotated key to authenticate the caller", timeout=10, tolerate=(ApiError,))
    stack.authority.revoke(old_kid)

    def refused() -> bool:
        result = raw_get(socket_uri, "guarded", old_token)
        return isinstance(result, grpc.RpcError) and (
            result.code() is grpc.StatusCode.UNAUTHENTICATED)
    wait_for(refused, "the revoked key to stop authenticating", timeout=10, tolerate=(ApiError,))


def test_unknown_target_is_not_found(start_bridge: StartBridge, stack: DevStack,
                                     socket_uri: str) -> None:
    """NOT_FOUND to an authenticated caller, and to anyone when no target is restricted;
    with restricted targets configured, an unauthenticated caller is first asked for its
    SVID, as for a restricted name (issue 13: names cannot be probed)."""
    start_bridge()
    with BridgeClient(socket_uri, svid=lambda: svid(stack)) as client, \
            pytest.raises(ApiError) as caught:
        client.get_credential("nope")
    assert caught.value.code == "NOT_FOUND"
    with BridgeClient(socket_uri) as client, pytest.raises(ApiError) as anonymous:
        client.get_credential("nope")
    assert anonymous.value.code == "UNAUTHENTICATED"


def test_unknown_target_is_not_found_when_nothing_is_restricted(
        start_bridge: StartBridge, stack: DevStack, socket_uri: str) -> None:
    start_bridge([aws_target(stack, "open")])
    with BridgeClient(socket_uri) as client, pytest.raises(ApiError) as caught:
        client.get_credential("nope")
    assert caught.value.code == "NOT_FOUND"


def test_requests_are_counted_by_method_and_code(start_bridge: StartBridge, stack: DevStack,
                                                 socket_uri: str) -> None:
    bridge = start_bridge([aws_target(stack, "guarded", allowed_callers=[CALLER])])
    with BridgeClient(socket_uri, svid=lambda: svid(stack)) as good, \
            BridgeClient(socket_uri) as anonymous:
        good.get_credential("guarded")
        good.get_credential("guarded")
        with pytest.raises(ApiError):
            anonymous.get_credential("guarded")
    registry = bridge.daemon.metrics.registry
    sample = "spiffe_bridge_grpc_requests_total"
    assert registry.get_sample_value(sample, {"method": "GetCredential", "code": "OK"}) == 2
    assert registry.get_sample_value(
        sample, {"method": "GetCredential", "code": "UNAUTHENTICATED"}) == 1


def _assert_no_material(error: grpc.RpcError, secrets: list[str], token: str | None) -> None:
    text = (error.details() or "") + repr(error.trailing_metadata())  # type: ignore[attr-defined]
    for secret in secrets:
        assert secret not in text
    if token:
        assert token not in text
