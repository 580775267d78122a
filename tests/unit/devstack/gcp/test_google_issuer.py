"""The ID tokens generateIdToken mints, and their issuer's documents."""

from __future__ import annotations

import json

import jwt

from bridge.devstack import HttpRequest, JwtAuthority
from bridge.devstack.gcp import GcpEmulator
from tests.unit.devstack.gcp.support import PORT, SA, call_iam, federated_token


def test_generate_id_token(gcp: GcpEmulator, authority: JwtAuthority) -> None:
    """The ID token is RS256 with kid, verifies with the served JWKS and names the SA."""
    body = {"audience": "sts.amazonaws.com", "includeEmail": True}
    bearer = federated_token(gcp, authority)
    status, document = call_iam(gcp, bearer, body, method="generateIdToken")
    assert status == 200
    token = document["token"]
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "RS256"
    (jwk,) = gcp.google_jwks()["keys"]
    assert header["kid"] == jwk["kid"]
    claims = jwt.decode(
        token,
        jwt.PyJWK(jwk).key,
        algorithms=["RS256"],
        audience="sts.amazonaws.com",
        options={"verify_exp": False, "verify_iat": False},
    )
    unique_id = gcp.service_accounts[SA].unique_id
    assert claims["iss"] == f"http://127.0.0.1:{PORT}/google"
    assert (claims["sub"], claims["azp"], claims["email"]) == (unique_id, unique_id, SA)
    assert claims["email_verified"] is True
    assert claims["exp"] - claims["iat"] == 3600


def test_google_discovery_documents(gcp: GcpEmulator) -> None:
    """The ID-token issuer serves discovery and its JWKS under /google."""
    get = HttpRequest("GET", "/google/.well-known/openid-configuration", "", {})
    discovery = json.loads(gcp.handle(get).body)
    assert discovery["issuer"] == gcp.google_issuer
    assert discovery["jwks_uri"] == gcp.url + "/google/oauth2/v3/certs"
    keys = json.loads(gcp.handle(HttpRequest("GET", "/google/oauth2/v3/certs", "", {})).body)
    assert keys == gcp.google_jwks()
    assert gcp.handle(HttpRequest("GET", "/nope", "", {})).status == 404
