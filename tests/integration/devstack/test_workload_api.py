"""The fake agent through py-spiffe and raw gRPC: SVIDs, bundles, validation, errors."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import jwt
import pytest
import spiffe
from spiffe.workloadapi.errors import FetchJwtSvidError, ValidateJwtSvidError

from bridge._proto.spiffe import workload_pb2
from bridge.devstack import DevStack, GrpcFailure, JwtAuthority, WorkloadApiServer

pytestmark = pytest.mark.integration

DEMO_ID = "spiffe://example.org/demo"  # the identities of conftest's `stack`
OTHER_ID = "spiffe://example.org/other"

TD = spiffe.TrustDomain("example.org")
HEADER = (("workload.spiffe.io", "true"),)


def _unary(channel: grpc.Channel, method: str, request_type: Any) -> grpc.UnaryUnaryMultiCallable:
    response_types: dict[str, Any] = {
        "FetchJWTSVID": workload_pb2.JWTSVIDResponse,
        "ValidateJWTSVID": workload_pb2.ValidateJWTSVIDResponse,
    }
    return channel.unary_unary(
        f"/SpiffeWorkloadAPI/{method}",
        request_serializer=request_type.SerializeToString,
        response_deserializer=response_types[method].FromString,
    )


@pytest.fixture
def channel(stack: DevStack) -> Iterator[grpc.Channel]:
    """A raw gRPC channel to the agent socket (no security header added)."""
    with grpc.insecure_channel(stack.workload_socket_uri) as ch:
        yield ch


def test_fetch_jwt_svid_with_audience(workload: spiffe.WorkloadApiClient) -> None:
    """fetch_jwt_svid returns the first identity's SVID for the audience."""
    svid = workload.fetch_jwt_svid({"sts.amazonaws.com"})
    assert str(svid.spiffe_id) == DEMO_ID
    assert svid.audience == {"sts.amazonaws.com"}
    assert 290 <= svid.expiry - time.time() <= 301


def test_fetch_jwt_svid_by_subject(workload: spiffe.WorkloadApiClient) -> None:
    """fetch_jwt_svid(subject=...) returns that identity's SVID."""
    svid = workload.fetch_jwt_svid({"a"}, subject=spiffe.SpiffeId(OTHER_ID))
    assert str(svid.spiffe_id) == OTHER_ID


def test_fetch_jwt_svids_returns_all(workload: spiffe.WorkloadApiClient) -> None:
    """fetch_jwt_svids returns one SVID per identity."""
    svids = workload.fetch_jwt_svids({"a"})
    assert sorted(str(s.spiffe_id) for s in svids) == [DEMO_ID, OTHER_ID]


def test_svid_carries_issuer_and_kid(stack: DevStack, workload: spiffe.WorkloadApiClient) -> None:
    """Minted SVIDs carry the stack's issuer and the active kid."""
    token = workload.fetch_jwt_svid({"a"}).token
    assert jwt.decode(token, options={"verify_signature": False})["iss"] == stack.issuer
    assert jwt.get_unverified_header(token)["kid"] == stack.authority.active_kid


def test_hint_is_sent(channel: grpc.Channel) -> None:
    """The hint of an identity is sent in JWTSVID.hint (py-spiffe does not expose it)."""
    call = _unary(channel, "FetchJWTSVID", workload_pb2.JWTSVIDRequest)
    response = call(workload_pb2.JWTSVIDRequest(audience=["a"]), metadata=HEADER, timeout=5)
    assert {s.spiffe_id: s.hint for s in response.svids} == {DEMO_ID: "", OTHER_ID: "other"}


def test_bundles_validate_svid_locally(workload: spiffe.WorkloadApiClient) -> None:
    """fetch_jwt_bundles gives the trust domain bundle that validates a fetched SVID."""
    svid = workload.fetch_jwt_svid({"aud"})
    bundle = workload.fetch_jwt_bundles().get_bundle_for_trust_domain(TD)
    assert bundle is not None
    validated = spiffe.JwtSvid.parse_and_validate(svid.token, bundle, {"aud"})
    assert str(validated.spiffe_id) == DEMO_ID


def test_validate_jwt_svid_on_agent(workload: spiffe.WorkloadApiClient) -> None:
    """validate_jwt_svid passes for a fresh SVID and its audience."""
    token = workload.fetch_jwt_svid({"aud"}).token
    assert str(workload.validate_jwt_svid(token, "aud").spiffe_id) == DEMO_ID


def test_validate_returns_claims_struct(channel: grpc.Channel, stack: DevStack) -> None:
    """ValidateJWTSVID answers the SPIFFE ID and the claims as a Struct."""
    token = stack.authority.mint(DEMO_ID, ["aud"], 60)
    call = _unary(channel, "ValidateJWTSVID", workload_pb2.ValidateJWTSVIDRequest)
    response = call(
        workload_pb2.ValidateJWTSVIDRequest(audience="aud", svid=token), metadata=HEADER, timeout=5
    )
    assert response.spiffe_id == DEMO_ID
    assert response.claims["sub"] == DEMO_ID
    assert list(response.claims["aud"]) == ["aud"]
    assert response.claims["iss"] == stack.issuer


def _lying_alg(token: str) -> str:
    """The same token under a header claiming RS256 (the kid names an EC key)."""
    header = {**jwt.get_unverified_header(token), "alg": "RS256"}
    encoded = jwt.utils.base64url_encode(json.dumps(header).encode()).decode()
    return ".".join([encoded, *token.split(".")[1:]])


@pytest.mark.parametrize(
    "bad",
    ["wrong-audience", "expired", "impostor", "unknown-td", "lying-alg", "garbage"],
)
def test_validate_rejects_bad_tokens(
    stack: DevStack, workload: spiffe.WorkloadApiClient, bad: str
) -> None:
    """ValidateJWTSVID answers INVALID_ARGUMENT for any token that does not validate."""
    authority = stack.authority
    makers: dict[str, Callable[[], str]] = {
        "wrong-audience": lambda: authority.mint(DEMO_ID, ["other"], 60),
        "expired": lambda: authority.mint(DEMO_ID, ["aud"], 60, iat=int(time.time()) - 120),
        "impostor": lambda: authority.impostor().mint(DEMO_ID, ["aud"], 60),
        "unknown-td": lambda: authority.mint("spiffe://elsewhere.test/x", ["aud"], 60),
        "lying-alg": lambda: _lying_alg(authority.mint(DEMO_ID, ["aud"], 60)),
        "garbage": lambda: "not-a-token",
    }
    token = makers[bad]()
    with pytest.raises(ValidateJwtSvidError, match="INVALID_ARGUMENT"):
        workload.validate_jwt_svid(token, "aud")


def test_missing_security_header(channel: grpc.Channel) -> None:
    """A call without workload.spiffe.io: true is INVALID_ARGUMENT with SPIRE's message."""
    call = _unary(channel, "FetchJWTSVID", workload_pb2.JWTSVIDRequest)
    for metadata in [(), (("workload.spiffe.io", "TRUE"),)]:
        with pytest.raises(grpc.RpcError) as caught:
            call(workload_pb2.JWTSVIDRequest(audience=["a"]), metadata=metadata, timeout=5)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert caught.value.details() == "security header missing from request"


def test_missing_audience(channel: grpc.Channel) -> None:
    """FetchJWTSVID without audience is INVALID_ARGUMENT 'audience must be specified'."""
    call = _unary(channel, "FetchJWTSVID", workload_pb2.JWTSVIDRequest)
    with pytest.raises(grpc.RpcError) as caught:
        call(workload_pb2.JWTSVIDRequest(), metadata=HEADER, timeout=5)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details() == "audience must be specified"


def test_unknown_spiffe_id_is_permission_denied(workload: spiffe.WorkloadApiClient) -> None:
    """Asking for an identity the workload does not hold is PERMISSION_DENIED."""
    with pytest.raises(FetchJwtSvidError, match="PERMISSION_DENIED") as caught:
        workload.fetch_jwt_svid({"a"}, subject=spiffe.SpiffeId("spiffe://example.org/nope"))
    assert "no identity issued" in str(caught.value)


def test_no_identities_is_permission_denied(
    stack: DevStack, workload: spiffe.WorkloadApiClient
) -> None:
    """With no identity registered yet, fetches are PERMISSION_DENIED (retryable)."""
    stack.workload.set_identities(())
    with pytest.raises(FetchJwtSvidError, match="PERMISSION_DENIED"):
        workload.fetch_jwt_svid({"a"})


def test_x509_profile_unimplemented(channel: grpc.Channel) -> None:
    """The X.509 RPCs are not served: UNIMPLEMENTED."""
    call = channel.unary_stream(
        "/SpiffeWorkloadAPI/FetchX509SVID",
        request_serializer=workload_pb2.X509SVIDRequest.SerializeToString,
        response_deserializer=workload_pb2.X509SVIDResponse.FromString,
    )
    with pytest.raises(grpc.RpcError) as caught:
        next(iter(call(workload_pb2.X509SVIDRequest(), metadata=HEADER, timeout=5)))
    assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_fault_switch_fails_next_calls(stack: DevStack, workload: spiffe.WorkloadApiClient) -> None:
    """fail_next makes the next N fetches fail with the given status, then recovers."""
    failure = GrpcFailure(grpc.StatusCode.UNAVAILABLE, "could not fetch JWT-SVID: down")
    stack.workload.faults.fail_next("FetchJWTSVID", failure, times=2)
    for _ in range(2):
        with pytest.raises(FetchJwtSvidError, match="UNAVAILABLE"):
            workload.fetch_jwt_svid({"a"})
    assert str(workload.fetch_jwt_svid({"a"}).spiffe_id) == DEMO_ID


def test_replaced_svid_is_handed_out(stack: DevStack, channel: grpc.Channel) -> None:
    """replace_svids hands out the caller's token instead of a minted one."""
    stack.workload.faults.replace_svids("not.a.jwt", times=1)
    call = _unary(channel, "FetchJWTSVID", workload_pb2.JWTSVIDRequest)
    request = workload_pb2.JWTSVIDRequest(audience=["a"], spiffe_id=DEMO_ID)
    assert call(request, metadata=HEADER, timeout=5).svids[0].svid == "not.a.jwt"
    assert call(request, metadata=HEADER, timeout=5).svids[0].svid.count(".") == 2
    assert call(request, metadata=HEADER, timeout=5).svids[0].svid != "not.a.jwt"


def test_expired_replacement_surfaces_in_py_spiffe(
    stack: DevStack, workload: spiffe.WorkloadApiClient
) -> None:
    """A replacement SVID that is already expired is refused by py-spiffe's parse."""
    stack.workload.faults.replace_svids(
        lambda sid, aud: stack.authority.mint(sid, list(aud), 60, iat=int(time.time()) - 600)
    )
    with pytest.raises(FetchJwtSvidError, match="expired"):
        workload.fetch_jwt_svid({"a"})


def test_stream_delivers_rotation(stack: DevStack, workload: spiffe.WorkloadApiClient) -> None:
    """stream_jwt_bundles sends the bundle at once and again after a key rotation."""
    seen: list[tuple[str, ...]] = []
    changed = threading.Condition()

    def on_success(bundles: spiffe.JwtBundleSet) -> None:
        bundle = bundles.get_bundle_for_trust_domain(TD)
        assert bundle is not None
        with changed:
            seen.append(tuple(bundle.jwt_authorities))
            changed.notify_all()

    errors: list[Exception] = []
    handle = workload.stream_jwt_bundles(on_success, errors.append)
    try:
        with changed:
            assert changed.wait_for(lambda: len(seen) >= 1, timeout=5)
        new_kid = stack.rotate_keys()
        with changed:
            assert changed.wait_for(lambda: any(new_kid in kids for kids in seen), timeout=5)
        assert seen[-1] == stack.authority.kids
    finally:
        handle.cancel()
    assert errors == []


def test_stop_with_open_stream_is_prompt(short_dir: Path) -> None:
    """stop() ends open bundle streams at once, and grpc removes the socket file."""
    authority = JwtAuthority("example.org")
    server = WorkloadApiServer(authority, short_dir / "a.sock", identities=[DEMO_ID])
    server.start()
    client = spiffe.WorkloadApiClient(server.uri, default_timeout=5)
    got = threading.Event()
    handle = client.stream_jwt_bundles(lambda _: got.set(), lambda _: None)
    try:
        assert got.wait(5)
        started = time.monotonic()
        server.stop()
        assert time.monotonic() - started < 2
        assert not server.socket_path.exists()
    finally:
        handle.cancel()
        client.close()
        server.stop()


def test_start_replaces_stale_socket_file(short_dir: Path) -> None:
    """A leftover socket file (agent killed) does not stop the server from binding."""
    path = short_dir / "stale.sock"
    with socket.socket(socket.AF_UNIX) as leftover:
        leftover.bind(str(path))
    assert path.exists()
    with WorkloadApiServer(JwtAuthority("example.org"), path, identities=[DEMO_ID]) as server:
        client = spiffe.WorkloadApiClient(server.uri, default_timeout=5)
        try:
            assert str(client.fetch_jwt_svid({"a"}).spiffe_id) == DEMO_ID
        finally:
            client.close()


def test_restart_on_same_socket(stack: DevStack, workload: spiffe.WorkloadApiClient) -> None:
    """After stop()/start() (an agent restart) the same client recovers within a second."""
    workload.fetch_jwt_svid({"a"})
    stack.workload.stop()
    stack.workload.start()
    deadline = time.monotonic() + 3
    while True:
        try:
            assert str(workload.fetch_jwt_svid({"a"}, timeout=1).spiffe_id) == DEMO_ID
            break
        except FetchJwtSvidError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def test_bundle_map_keyed_by_spiffe_id(short_dir: Path) -> None:
    """bundle_key='spiffe_id' keys the map as SPIRE does; py-spiffe accepts it too."""
    server = WorkloadApiServer(
        JwtAuthority("example.org"), short_dir / "b.sock", bundle_key="spiffe_id"
    )
    with server, grpc.insecure_channel(server.uri) as channel:
        call = channel.unary_stream(
            "/SpiffeWorkloadAPI/FetchJWTBundles",
            request_serializer=workload_pb2.JWTBundlesRequest.SerializeToString,
            response_deserializer=workload_pb2.JWTBundlesResponse.FromString,
        )
        stream = call(workload_pb2.JWTBundlesRequest(), metadata=HEADER, timeout=5)
        first = next(iter(stream))
        stream.cancel()
        assert list(first.bundles) == ["spiffe://example.org"]
        client = spiffe.WorkloadApiClient(server.uri, default_timeout=5)
        try:
            assert client.fetch_jwt_bundles().get_bundle_for_trust_domain(TD) is not None
        finally:
            client.close()
