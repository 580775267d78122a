"""The access tokens the Google emulator issued, and whom each belongs to. DEVELOPMENT ONLY.

Federated tokens (from STS) and service-account tokens (from generateAccessToken) are
opaque random strings starting `ya29.dev-`, as Google's start `ya29.`; IAM Credentials
accepts either as its Bearer token, and tests ask `whoami`. Kept in memory only.
"""

from __future__ import annotations

import secrets
import threading
from dataclasses import dataclass, field

_TOKEN_ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_"


def new_token() -> str:
    """A fresh opaque access token."""
    return "ya29.dev-" + "".join(secrets.choice(_TOKEN_ALPHABET) for _ in range(120))


@dataclass(frozen=True, slots=True)
class GoogleToken:
    """An access token this emulator issued and whom it belongs to (`whoami`).

    `principal` is a `principal://` member (federated) or `serviceAccount:<email>`;
    `delegates` are the service accounts the token was obtained through.
    """

    token: str = field(repr=False)
    principal: str
    scopes: tuple[str, ...]
    expires_at: float
    provider: str | None = None
    subject: str | None = None
    service_account: str | None = None
    delegates: tuple[str, ...] = ()


class TokenStore:
    """Every token issued, in order, by its value. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tokens: dict[str, GoogleToken] = {}

    def remember(self, token: GoogleToken) -> GoogleToken:
        """Keep `token` (and return it)."""
        with self._lock:
            self._tokens[token.token] = token
        return token

    def get(self, token: str) -> GoogleToken | None:
        """The token issued with this value (expired ones too)."""
        with self._lock:
            return self._tokens.get(token)

    @property
    def issued(self) -> tuple[GoogleToken, ...]:
        """Every access token handed out, oldest first."""
        with self._lock:
            return tuple(self._tokens.values())
