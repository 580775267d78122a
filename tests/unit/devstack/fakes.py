"""What the emulators' unit tests share: one issuer, one instant, an in-memory IdP,
and form posts for calling `handle` without a socket."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

from bridge.devstack import HttpRequest, JwtAuthority

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


def form_post(
    path: str, form: Mapping[str, str], *, content_type: str = "application/x-www-form-urlencoded"
) -> HttpRequest:
    """A form-urlencoded POST of `form` to `path`, as an SDK sends it."""
    return HttpRequest(
        method="POST",
        path=path,
        query="",
        headers={"Content-Type": content_type},
        body=urlencode(form).encode(),
    )
