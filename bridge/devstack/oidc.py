"""An OIDC discovery endpoint for the dev stack's issuer. DEVELOPMENT ONLY.

Cloud token services find a JWT issuer's keys through OIDC discovery; SPIRE ships
a separate "OIDC Discovery Provider" for that. This stand-in serves the same two
documents on `http://127.0.0.1:<port>`:

- `GET /.well-known/openid-configuration`: the fields SPIRE's provider sends;
- `GET /keys`: the JWKS, `Cache-Control: no-cache, no-store, must-revalidate`,
  and 501 when there are no keys, as SPIRE does.

The issuer is the server's own URL, known once it is bound: start the server, then
give its `issuer` to the signing authority. `faults` (keyed by request path) can
fail or slow either document; `stop()` plays an unreachable issuer.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from bridge.devstack._emulator import HttpEmulator
from bridge.devstack._http import HttpRequest, HttpResponse
from bridge.devstack.jwks import DISCOVERY_PATH

KEYS_PATH = "/keys"

JwksSource = Callable[[], Mapping[str, Any]]
"""Returns the current JWKS (`{"keys": [...]}`), e.g. `JwtAuthority.jwks`."""


def _json(status: int, document: Mapping[str, Any], **headers: str) -> HttpResponse:
    body = json.dumps(document, indent=2).encode()
    return HttpResponse(status, body, {"Content-Type": "application/json", **headers})


def _text(status: int, message: str) -> HttpResponse:
    return HttpResponse(status, message.encode() + b"\n", {"Content-Type": "text/plain"})


class OidcDiscoveryServer(HttpEmulator):
    """Serves discovery and JWKS for one issuer on loopback. Thread-safe."""

    def __init__(self, jwks: JwksSource, *, port: int = 0, issuer: str | None = None) -> None:
        """Prepare the server; `issuer` defaults to its own URL once bound."""
        self._jwks = jwks
        self._issuer = issuer.rstrip("/") if issuer else None
        super().__init__(port=port, name="devstack-oidc")


    @property
    def issuer(self) -> str:
        """The issuer URL (the `iss` tokens must carry), without trailing slash."""
        return self._issuer or self.url

    @property
    def jwks_uri(self) -> str:
        """Where the JWKS is served: `<issuer>/keys`."""
        return f"{self.issuer}{KEYS_PATH}"

    def discovery_document(self) -> dict[str, Any]:
        """The `/.well-known/openid-configuration` document, as SPIRE's provider writes it."""
        return {
            "issuer": self.issuer,
            "jwks_uri": self.jwks_uri,
            "authorization_endpoint": "",
            "response_types_supported": ["id_token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256", "ES256", "ES384"],
        }

    def handle(self, request: HttpRequest) -> HttpResponse:
        """Answer one HTTP request (public so tests can call it without a socket)."""
        failure = self.faults.before(request.path)
        if failure is not None:
            return _text(failure.status, failure.message or failure.code)
        if request.path not in (DISCOVERY_PATH, KEYS_PATH):
            return _text(404, "not found")
        if request.method != "GET":
            return HttpResponse(405, b"method not allowed\n", {"Allow": "GET"})
        if request.path == DISCOVERY_PATH:
            return _json(200, self.discovery_document())
        jwks = dict(self._jwks())
        if not jwks.get("keys"):
            return _text(501, "no keys available")
        return _json(200, jwks, **{"Cache-Control": "no-cache, no-store, must-revalidate"})
