"""How the emulated clouds learn an issuer's keys and check a signature. DEVELOPMENT ONLY.

Like AWS and Google, they read `<issuer>/.well-known/openid-configuration`, follow its
`jwks_uri`, cache the keys for a while, and fetch again when a token names a `kid` they
do not know (the issuer may have rotated). Each emulator turns `IssuerUnreachableError` into
its own cloud's error. Documents are read with `fetch_json` unless a test injects its own
`JsonFetcher`.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import jwt

DISCOVERY_PATH = "/.well-known/openid-configuration"
_MAX_DOCUMENT = 1 << 20  # far above any real discovery document or JWKS

JsonFetcher = Callable[[str, float], Any]
"""Fetches and parses a JSON document: (url, timeout seconds) -> value.

Raises OSError or ValueError when the document cannot be had."""

Keys = tuple[Mapping[str, Any], ...]


def fetch_json(url: str, timeout: float) -> Any:
    """GET a JSON document over http(s), ignoring proxy environment variables.

    Raises:
        OSError: connection failure, timeout or non-2xx status.
        ValueError: not an http(s) URL, or the body is not JSON.
    """
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"not an http(s) URL: {url!r}")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    with opener.open(request, timeout=timeout) as response:
        return json.loads(response.read(_MAX_DOCUMENT))


class IssuerUnreachableError(Exception):
    """The discovery document or the JWKS could not be read."""


class IssuerKeys:
    """A thread-safe, time-limited cache of issuers' JWKS."""

    def __init__(self, fetch: JsonFetcher, *, timeout: float, cache_seconds: float) -> None:
        self._fetch = fetch
        self._timeout = timeout
        self._cache_seconds = cache_seconds
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[float, Keys]] = {}

    def candidates(self, issuer: str, kid: str | None) -> Keys:
        """Keys that may have signed a token with `kid` (all keys when there is no kid)."""
        keys = self.keys(issuer, refresh=False)
        found = tuple(k for k in keys if kid is None or k.get("kid") == kid)
        if not found and kid is not None:
            found = tuple(k for k in self.keys(issuer, refresh=True) if k.get("kid") == kid)
        return found

    def keys(self, issuer: str, *, refresh: bool) -> Keys:
        now = time.monotonic()
        with self._lock:
            cached = self._cache.get(issuer)
        if cached is not None and not refresh and now - cached[0] < self._cache_seconds:
            return cached[1]
        try:
            discovery = self._fetch(issuer + DISCOVERY_PATH, self._timeout)
            document = self._fetch(str(discovery["jwks_uri"]), self._timeout)
            keys = tuple(k for k in document["keys"] if isinstance(k, Mapping))
        except (OSError, ValueError, TypeError, KeyError) as err:
            raise IssuerUnreachableError(type(err).__name__) from err
        with self._lock:
            self._cache[issuer] = (now, keys)
        return keys

    def forget(self, issuer: str | None = None) -> None:
        """Drop one issuer's cached keys, or all of them."""
        with self._lock:
            if issuer is None:
                self._cache.clear()
            else:
                self._cache.pop(issuer, None)


def signature_valid(token: str, alg: str, candidates: Iterable[Mapping[str, Any]]) -> bool:
    """Whether any candidate key verifies the token's signature (claims are not checked)."""
    for candidate in candidates:
        try:
            key = jwt.PyJWK(dict(candidate), algorithm=alg)
            jwt.decode(token, key.key, algorithms=[alg], options={
                "verify_signature": True, "verify_exp": False, "verify_nbf": False,
                "verify_iat": False, "verify_aud": False, "verify_iss": False})
        except (jwt.PyJWTError, ValueError, TypeError, KeyError):
            continue
        return True
    return False
