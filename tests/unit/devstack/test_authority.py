"""JwtAuthority: SPIRE-shaped tokens, key documents, rotation and look-alikes."""

from __future__ import annotations

import threading

import jwt
import pytest

from bridge.devstack import JwtAuthority, SigningKey

SUB = "spiffe://example.org/demo"


def _decode(authority: JwtAuthority, token: str, audience: str) -> dict[str, object]:
    key = authority.public_key(jwt.get_unverified_header(token)["kid"])
    assert key is not None
    claims: dict[str, object] = jwt.decode(token, key, algorithms=["ES256"], audience=audience)
    return claims


def test_mint_produces_spire_shaped_header() -> None:
    """Minted tokens carry alg ES256, typ JWT and the active kid in the header."""
    authority = JwtAuthority("example.org")
    header = jwt.get_unverified_header(authority.mint(SUB, ["aud1"], 300))
    assert header == {"alg": "ES256", "typ": "JWT", "kid": authority.active_kid}


def test_mint_claims_are_integers_with_list_audience() -> None:
    """Claims are sub, aud as a list, and integer iat/exp = iat + ttl; no iss by default."""
    authority = JwtAuthority("example.org", clock=lambda: 1_700_000_000.7)
    token = authority.mint(SUB, ["aud1"], 300)
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims == {"sub": SUB, "aud": ["aud1"], "iat": 1_700_000_000, "exp": 1_700_000_300}
    assert '"exp":1700000300' in jwt.utils.base64url_decode(token.split(".")[1]).decode()


def test_mint_adds_iss_only_when_issuer_set() -> None:
    """The iss claim appears once an issuer is set, as with SPIRE's jwt_issuer."""
    authority = JwtAuthority("example.org")
    authority.set_issuer("http://127.0.0.1:1234")
    claims = _decode(authority, authority.mint(SUB, ["a"], 60), "a")
    assert claims["iss"] == "http://127.0.0.1:1234"


def test_mint_extra_claims_headers_and_iat_override() -> None:
    """extra_claims, headers and iat let tests shape unusual tokens."""
    authority = JwtAuthority("example.org")
    token = authority.mint(
        SUB, ["a"], 60, extra_claims={"jti": "x"}, headers={"typ": "JOSE"}, iat=1000
    )
    claims = jwt.decode(token, options={"verify_signature": False})
    assert (claims["jti"], claims["iat"], claims["exp"]) == ("x", 1000, 1060)
    assert jwt.get_unverified_header(token)["typ"] == "JOSE"


@pytest.mark.parametrize("audience", [[], "aud"], ids=["empty", "bare-string"])
def test_mint_rejects_bad_audience(audience: list[str] | str) -> None:
    """An empty or bare-string audience is a caller bug."""
    with pytest.raises(ValueError, match="audience"):
        JwtAuthority("example.org").mint(SUB, audience, 60)


@pytest.mark.parametrize("name", ["", "spiffe://example.org", "a/b"])
def test_trust_domain_must_be_bare_name(name: str) -> None:
    """The trust domain is a bare name, not a URI."""
    with pytest.raises(ValueError, match="bare name"):
        JwtAuthority(name)


def test_jwks_is_plain_with_alg_and_kid() -> None:
    """jwks() lists kty, crv, x, y, kid and alg, like SPIRE's OIDC provider."""
    authority = JwtAuthority("example.org")
    (key,) = authority.jwks()["keys"]
    assert set(key) == {"kty", "crv", "x", "y", "kid", "alg"}
    assert (key["kty"], key["crv"], key["alg"], key["kid"]) == (
        "EC",
        "P-256",
        "ES256",
        authority.active_kid,
    )


def test_spiffe_bundle_marks_keys_jwt_svid() -> None:
    """The SPIFFE bundle form adds use: jwt-svid to every key."""
    authority = JwtAuthority("example.org")
    authority.rotate()
    keys = authority.spiffe_bundle()["keys"]
    assert [k["use"] for k in keys] == ["jwt-svid", "jwt-svid"]
    assert [k["kid"] for k in keys] == list(authority.kids)


def test_rotate_keeps_old_key_published() -> None:
    """After rotation new tokens use the new kid and old tokens still verify."""
    authority = JwtAuthority("example.org")
    old_token = authority.mint(SUB, ["a"], 60)
    old_kid = authority.active_kid
    new = authority.rotate()
    assert new.kid != old_kid
    assert authority.kids == (old_kid, new.kid)
    assert jwt.get_unverified_header(authority.mint(SUB, ["a"], 60))["kid"] == new.kid
    assert _decode(authority, old_token, "a")["sub"] == SUB


def test_rotate_refuses_duplicate_kid() -> None:
    """A rotated-in key may not reuse a published kid."""
    authority = JwtAuthority("example.org")
    with pytest.raises(ValueError, match="already published"):
        authority.rotate(key=SigningKey.generate(kid=authority.active_kid))


def test_revoke_unpublishes_old_key_only() -> None:
    """revoke() drops a retired key and refuses the active one."""
    authority = JwtAuthority("example.org")
    old_kid = authority.active_kid
    with pytest.raises(ValueError, match="active"):
        authority.revoke(old_kid)
    authority.rotate()
    authority.revoke(old_kid)
    assert old_kid not in authority.kids
    assert authority.public_key(old_kid) is None
    with pytest.raises(KeyError):
        authority.revoke(old_kid)


def test_impostor_has_same_kid_but_different_key() -> None:
    """An impostor's tokens look identical in shape but fail the real key."""
    authority = JwtAuthority("example.org", issuer="http://issuer")
    impostor = authority.impostor()
    token = impostor.mint(SUB, ["a"], 60)
    assert jwt.get_unverified_header(token)["kid"] == authority.active_kid
    assert impostor.issuer == authority.issuer
    with pytest.raises(jwt.InvalidSignatureError):
        _decode(authority, token, "a")


def test_subscribers_hear_key_changes_until_unsubscribed() -> None:
    """Subscribers are called on rotate and revoke, and not after unsubscribing."""
    authority = JwtAuthority("example.org")
    calls: list[int] = []
    unsubscribe = authority.subscribe(lambda: calls.append(authority.version))
    first = authority.active_kid
    authority.rotate()
    authority.revoke(first)
    unsubscribe()
    authority.rotate()
    assert calls == [1, 2]


def test_repr_never_shows_private_key() -> None:
    """Neither the authority nor a signing key prints private key material."""
    authority = JwtAuthority("example.org")
    key = authority.active_key
    secret = str(key.private_key.private_numbers().private_value)
    assert secret not in repr(authority)
    assert secret not in repr(key)
    assert "private_key" not in repr(key)


def test_concurrent_mint_and_rotate() -> None:
    """Minting while rotating always yields tokens signed by a published key."""
    authority = JwtAuthority("example.org")
    tokens: list[str] = []
    lock = threading.Lock()

    def mint_many() -> None:
        for _ in range(50):
            token = authority.mint(SUB, ["a"], 60)
            with lock:
                tokens.append(token)

    threads = [threading.Thread(target=mint_many) for _ in range(4)]
    for thread in threads:
        thread.start()
    for _ in range(10):
        authority.rotate()
    for thread in threads:
        thread.join(timeout=10)
    assert len(tokens) == 200
    assert all(_decode(authority, t, "a")["sub"] == SUB for t in tokens)
