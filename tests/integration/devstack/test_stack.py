"""DevStack wiring over real sockets: OIDC over HTTP, issuer alignment, lifecycle."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import jwt
import pytest
import spiffe

from bridge.devstack import (
    AWS_AUDIENCE,
    DEMO_ROLE_ARN,
    DevStack,
    JwtAuthority,
    OidcDiscoveryServer,
)

pytestmark = pytest.mark.integration

_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _get(url: str) -> tuple[int, dict[str, str], bytes]:
    try:
        with _NO_PROXY.open(url, timeout=5) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def _get_json(url: str) -> Any:
    status, _, body = _get(url)
    assert status == 200
    return json.loads(body)


def _port_open(url: str) -> bool:
    host, port = url.removeprefix("http://").split(":")
    with socket.socket() as probe:
        probe.settimeout(1)
        return probe.connect_ex((host, int(port))) == 0


def test_issuer_alignment(stack: DevStack, workload: spiffe.WorkloadApiClient) -> None:
    """Token iss = discovery issuer = registered STS provider, all on loopback."""
    discovery = _get_json(stack.issuer + "/.well-known/openid-configuration")
    token = workload.fetch_jwt_svid({AWS_AUDIENCE}).token
    assert jwt.decode(token, options={"verify_signature": False})["iss"] == stack.issuer
    assert discovery["issuer"] == stack.issuer
    assert discovery["jwks_uri"] == stack.issuer + "/keys"
    assert stack.issuer.startswith("http://127.0.0.1:")
    assert stack.aws_sts_url.startswith("http://127.0.0.1:")


def test_discovery_over_http(stack: DevStack) -> None:
    """GET /.well-known/openid-configuration serves SPIRE's fields as JSON."""
    status, headers, body = _get(stack.issuer + "/.well-known/openid-configuration")
    assert status == 200
    assert headers["Content-Type"] == "application/json"
    assert "Date" in headers
    document = json.loads(body)
    assert document["authorization_endpoint"] == ""
    assert document["response_types_supported"] == ["id_token"]
    assert document["subject_types_supported"] == ["public"]
    assert document["id_token_signing_alg_values_supported"] == ["RS256", "ES256", "ES384"]


def test_keys_over_http(stack: DevStack) -> None:
    """GET /keys serves the JWKS uncacheable, and shows rotated keys at once."""
    status, headers, body = _get(stack.issuer + "/keys")
    assert status == 200
    assert headers["Cache-Control"] == "no-cache, no-store, must-revalidate"
    (key,) = json.loads(body)["keys"]
    assert {k: key[k] for k in ("kty", "crv", "alg")} == {
        "kty": "EC",
        "crv": "P-256",
        "alg": "ES256",
    }
    assert key["kid"] == stack.authority.active_kid
    new_kid = stack.rotate_keys()
    kids = [k["kid"] for k in _get_json(stack.issuer + "/keys")["keys"]]
    assert kids == [key["kid"], new_kid]


def test_keys_501_without_keys() -> None:
    """/keys answers 501 over HTTP when the key source is empty."""
    with OidcDiscoveryServer(lambda: {"keys": []}) as server:
        assert _get(server.issuer + "/keys")[0] == 501


def test_oidc_restart_keeps_port() -> None:
    """A stopped OIDC server is unreachable; restarted, it serves on the same port."""
    server = OidcDiscoveryServer(JwtAuthority("example.org").jwks)
    server.start()
    try:
        url = server.url
        server.stop()
        assert not _port_open(url)
        server.start()
        assert server.url == url
        assert _get(url + "/keys")[0] == 200
    finally:
        server.stop()


def test_stack_layout_and_demo_role(stack: DevStack) -> None:
    """The agent socket lives in workdir and the demo provider and role are registered."""
    assert stack.workload_socket_path == stack.workdir / "agent.sock"
    assert stack.workload_socket_uri == f"unix://{stack.workdir}/agent.sock"
    assert stack.workload_socket_path.is_socket()
    assert stack.aws.providers[stack.issuer].client_ids == (AWS_AUDIENCE,)
    role = stack.aws.roles[DEMO_ROLE_ARN]
    assert DEMO_ROLE_ARN == "arn:aws:iam::111122223333:role/demo"
    assert (role.provider_url, role.aud, role.sub, role.max_session_duration) == (
        stack.issuer,
        AWS_AUDIENCE,
        "spiffe://example.org/*",
        43200,
    )


def test_stop_releases_everything(short_dir: Path) -> None:
    """Leaving the context stops all servers: socket gone, ports closed."""
    with DevStack(short_dir) as stack:
        issuer, sts_url, sock = stack.issuer, stack.aws_sts_url, stack.workload_socket_path
        assert _port_open(issuer)
        assert _port_open(sts_url)
        assert sock.exists()
    assert not sock.exists()
    assert not _port_open(issuer)
    assert not _port_open(sts_url)
    stack.stop()  # idempotent


def test_custom_trust_domain_defaults_identity(short_dir: Path) -> None:
    """With only a trust domain given, the stack issues spiffe://<td>/demo."""
    with DevStack(short_dir, trust_domain="acme.test", svid_ttl=60) as stack:
        client = spiffe.WorkloadApiClient(stack.workload_socket_uri, default_timeout=5)
        try:
            svid = client.fetch_jwt_svid({"a"})
        finally:
            client.close()
    assert str(svid.spiffe_id) == "spiffe://acme.test/demo"
    claims = jwt.decode(svid.token, options={"verify_signature": False})
    assert claims["exp"] - claims["iat"] == 60


def test_identity_outside_trust_domain_refused(short_dir: Path) -> None:
    """Identities must belong to the stack's trust domain."""
    with pytest.raises(ValueError, match="trust domain"):
        DevStack(short_dir, identities=["spiffe://elsewhere.test/x"])


def test_socket_path_too_long_refused(tmp_path: Path) -> None:
    """A workdir that would push the socket path past 107 bytes is refused up front."""
    deep = tmp_path / ("d" * 120)
    with pytest.raises(ValueError, match="AF_UNIX"):
        DevStack(deep)
