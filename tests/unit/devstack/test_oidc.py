"""OidcDiscoveryServer.handle without sockets: SPIRE-shaped discovery and JWKS."""

from __future__ import annotations

import json
from typing import Any

import pytest

from bridge.devstack import HttpFailure, HttpRequest, JwtAuthority, OidcDiscoveryServer

ISSUER = "https://oidc.example.org"


def _get(
    server: OidcDiscoveryServer, path: str, method: str = "GET"
) -> tuple[int, Any, dict[str, str]]:
    response = server.handle(HttpRequest(method, path, "", {}))
    body: Any = response.body
    if response.headers.get("Content-Type") == "application/json":
        body = json.loads(response.body)
    return response.status, body, dict(response.headers)


@pytest.fixture
def authority() -> JwtAuthority:
    return JwtAuthority("example.org", issuer=ISSUER)


def test_discovery_document_fields(authority: JwtAuthority) -> None:
    """The discovery document has exactly SPIRE's fields and values."""
    server = OidcDiscoveryServer(authority.jwks, issuer=ISSUER + "/")
    status, document, _ = _get(server, "/.well-known/openid-configuration")
    assert status == 200
    assert document == {
        "issuer": ISSUER,
        "jwks_uri": ISSUER + "/keys",
        "authorization_endpoint": "",
        "response_types_supported": ["id_token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256", "ES256", "ES384"],
    }


def test_keys_document_and_cache_headers(authority: JwtAuthority) -> None:
    """/keys serves the authority's JWKS, never cacheable."""
    server = OidcDiscoveryServer(authority.jwks, issuer=ISSUER)
    status, document, headers = _get(server, "/keys")
    assert status == 200
    assert document == authority.jwks()
    assert headers["Cache-Control"] == "no-cache, no-store, must-revalidate"


def test_keys_reflect_rotation(authority: JwtAuthority) -> None:
    """A rotated key shows up on the next /keys request."""
    server = OidcDiscoveryServer(authority.jwks, issuer=ISSUER)
    new_kid = authority.rotate().kid
    _, document, _ = _get(server, "/keys")
    assert new_kid in [k["kid"] for k in document["keys"]]


def test_no_keys_is_501() -> None:
    """With an empty key set /keys answers 501, as SPIRE's provider does."""
    server = OidcDiscoveryServer(lambda: {"keys": []}, issuer=ISSUER)
    assert _get(server, "/keys")[0] == 501


@pytest.mark.parametrize(
    ("path", "method", "status"),
    [("/", "GET", 404), ("/keys/", "GET", 404), ("/keys", "POST", 405)],
    ids=["root", "trailing-slash", "post"],
)
def test_other_requests_refused(
    authority: JwtAuthority, path: str, method: str, status: int
) -> None:
    """Unknown paths are 404 and non-GET methods 405."""
    server = OidcDiscoveryServer(authority.jwks, issuer=ISSUER)
    assert _get(server, path, method)[0] == status


def test_faults_are_per_path(authority: JwtAuthority) -> None:
    """A fault on /keys fails that document once and leaves discovery alone."""
    server = OidcDiscoveryServer(authority.jwks, issuer=ISSUER)
    server.faults.fail_next("/keys", HttpFailure(503, "unavailable"))
    assert _get(server, "/.well-known/openid-configuration")[0] == 200
    assert _get(server, "/keys")[0] == 503
    assert _get(server, "/keys")[0] == 200


def test_issuer_unknown_before_start(authority: JwtAuthority) -> None:
    """Without an explicit issuer, the issuer is the bound URL: unknown until started."""
    server = OidcDiscoveryServer(authority.jwks)
    with pytest.raises(RuntimeError, match="not started"):
        _ = server.issuer
