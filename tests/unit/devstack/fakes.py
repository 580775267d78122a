"""What the emulators' unit tests share: one issuer, one instant, an in-memory IdP."""

from __future__ import annotations

from typing import Any

from bridge.devstack import JwtAuthority

ISSUER = "https://issuer.test"
SUB = "spiffe://example.org/ns/app"
NOW = 1_800_000_000


class FakeIdp:
    """Serves discovery + JWKS documents from memory and counts fetches."""

    def __init__(self, authority: JwtAuthority) -> None:
        self.authority = authority
        self.fetches: list[str] = []
        self.down = False

    def __call__(self, url: str, timeout: float) -> Any:
        self.fetches.append(url)
        if self.down:
            raise ConnectionRefusedError("down")
        if url == ISSUER + "/.well-known/openid-configuration":
            return {"issuer": ISSUER, "jwks_uri": ISSUER + "/keys"}
        if url == ISSUER + "/keys":
            return self.authority.jwks()
        raise OSError(f"404 {url}")
