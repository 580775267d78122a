"""OIDC subject tokens: alg, kid, issuer, signature, audience and times."""

from __future__ import annotations

import json
from collections.abc import Callable

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import RSAAlgorithm

from bridge.devstack import JwtAuthority
from bridge.devstack.gcp import GcpEmulator
from tests.unit.devstack.fakes import ISSUER, NOW, SUB, FakeIdp
from tests.unit.devstack.gcp.support import PROVIDER, exchange, mint_svid


def _es384_token() -> str:
    key = ec.generate_private_key(ec.SECP384R1())
    claims = {"sub": SUB, "aud": [PROVIDER], "iss": ISSUER, "iat": NOW, "exp": NOW + 300}
    return jwt.encode(claims, key, algorithm="ES384", headers={"kid": "p384"})


@pytest.mark.parametrize(
    ("make_token", "fragment"),
    [
        (lambda a: a.mint(SUB, ["other"], 300), "The audience in ID Token"),
        (lambda a: mint_svid(a, iss="https://other.test"), "does not match the expected ISSUER"),
        (lambda a: a.mint(SUB, [PROVIDER], 300, iat=NOW - 600), "expired"),
        (lambda a: a.mint(SUB, [PROVIDER], 300, iat=NOW + 120), "future"),
        (lambda a: a.mint(SUB, [PROVIDER], 48 * 3600, iat=NOW - 10), "48 hours"),
        (lambda a: a.sign({"aud": [PROVIDER], "iss": ISSUER, "iat": NOW, "exp": NOW + 60}), "sub"),
        (lambda a: a.sign({"sub": SUB, "aud": [PROVIDER], "iss": ISSUER, "exp": NOW + 60}), "iat"),
        (lambda a: _without_kid(mint_svid(a)), "kid"),
        (lambda a: _es384_token(), "ES384"),
        (lambda a: a.impostor().mint(SUB, [PROVIDER], 300), "signature"),
        (lambda a: a.mint(SUB, [PROVIDER], 300, headers={"kid": "nope"}), "kid"),
        (lambda a: "not.a-jwt", "parse"),
    ],
    ids=[
        "wrong-aud",
        "wrong-iss",
        "expired",
        "iat-future",
        "lifetime-48h",
        "no-sub",
        "no-iat",
        "no-kid",
        "es384",
        "foreign-key",
        "unknown-kid",
        "garbage",
    ],
)
def test_subject_token_refusals(
    gcp: GcpEmulator,
    authority: JwtAuthority,
    make_token: Callable[[JwtAuthority], str],
    fragment: str,
) -> None:
    """Tokens Google would refuse are invalid_grant 400 with a telling description."""
    status, document = exchange(gcp, make_token(authority))
    assert (status, document["error"]) == (400, "invalid_grant")
    assert fragment in document["error_description"]


def _without_kid(token: str) -> str:
    """The same claims and signature under a header without `kid`."""
    header = jwt.utils.base64url_encode(json.dumps({"alg": "ES256", "typ": "JWT"}).encode())
    return ".".join([header.decode(), *token.split(".")[1:]])


def test_iat_within_leeway_is_accepted(gcp: GcpEmulator, authority: JwtAuthority) -> None:
    """An iat up to a minute ahead of Google's clock is tolerated."""
    assert exchange(gcp, authority.mint(SUB, [PROVIDER], 300, iat=NOW + 30))[0] == 200


def test_default_audiences_are_the_resource_name(gcp: GcpEmulator, authority: JwtAuthority) -> None:
    """With no allowed audiences, aud must be the provider name, with or without https:."""
    gcp.add_oidc_provider(PROVIDER, issuer_uri=ISSUER)
    assert exchange(gcp, authority.mint(SUB, [PROVIDER], 300))[0] == 200
    assert exchange(gcp, authority.mint(SUB, ["https:" + PROVIDER], 300))[0] == 200
    status, document = exchange(gcp, authority.mint(SUB, ["sts.amazonaws.com"], 300))
    assert (status, document["error"]) == (400, "invalid_grant")


def test_uploaded_rs256_jwks(gcp: GcpEmulator, idp: FakeIdp) -> None:
    """An RS256 token verifies against an uploaded JWKS without any discovery fetch."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = {**RSAAlgorithm.to_jwk(key.public_key(), as_dict=True), "kid": "r1"}
    gcp.add_oidc_provider(
        PROVIDER, issuer_uri=ISSUER, allowed_audiences=[PROVIDER], jwks={"keys": [jwk]}
    )
    claims = {"sub": SUB, "aud": PROVIDER, "iss": ISSUER, "iat": NOW, "exp": NOW + 300}
    token = jwt.encode(claims, key, algorithm="RS256", headers={"kid": "r1"})
    assert exchange(gcp, token)[0] == 200
    assert idp.fetches == []


def test_jwks_cached_and_refetched_on_unknown_kid(
    gcp: GcpEmulator, authority: JwtAuthority, idp: FakeIdp
) -> None:
    """Issuer keys are fetched once, and again for a kid not in the cache."""
    assert exchange(gcp, mint_svid(authority))[0] == 200
    assert exchange(gcp, mint_svid(authority))[0] == 200
    assert len(idp.fetches) == 2
    authority.rotate()
    assert exchange(gcp, mint_svid(authority))[0] == 200
    assert len(idp.fetches) == 4
