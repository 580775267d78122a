"""JWT bundles from the Workload API, parsed key by key: what cannot be used is skipped.

py-spiffe parses a bundle update all or nothing, and the whole watch stops on the first
failure: one `kty: oct` key crashed the caller check with an AttributeError, and one
malformed document left the previous bundles (revoked keys and all) authenticating
callers until the next SVID fetch reconnected. Here each trust domain's JWKS is parsed
alone and each key in it alone: a key without a `kid`, of a type no JWT-SVID algorithm
uses (symmetric `oct`, private parts, unknown `kty`), malformed, or a second key under the
same `kid` is skipped and counted (`SKIP_REASONS`); a document that is not a JWKS leaves
its trust domain without a bundle (fail closed) and the others in place. The watch goes
on either way, and the reasons are kept per trust domain so that an SVID that then fails
to verify says why.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from jwt import PyJWK, PyJWTError
from spiffe import JwtBundle, JwtBundleSet, TrustDomain, WorkloadApiClient
from spiffe.errors import PySpiffeError

SKIP_REASONS = ("no_kid", "unsupported_kty", "malformed_key", "duplicate_kid",
                "malformed_bundle")
_PUBLIC = (rsa.RSAPublicKey, ec.EllipticCurvePublicKey, ed25519.Ed25519PublicKey,
           ed448.Ed448PublicKey)
_ASYMMETRIC_KTY = {"RSA", "EC", "OKP"}
_PRIVATE_MEMBERS = {"d", "p", "q", "dp", "dq", "qi", "oth"}


@dataclass(slots=True)
class ParsedBundles:
    """One bundle update: the usable bundles, and what was skipped in each trust domain."""

    bundles: JwtBundleSet
    problems: dict[str, str] = field(default_factory=dict)  # trust domain -> why
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> count


def parse_bundles(raw: Mapping[str, bytes]) -> ParsedBundles:
    """Parse a `JWTBundlesResponse.bundles` map, keeping every usable key."""
    parsed = ParsedBundles(JwtBundleSet({}))
    for name, document in raw.items():
        try:
            trust_domain = TrustDomain(name)
        except PySpiffeError:
            _skip(parsed, name, "malformed_bundle", "not a trust domain name")
            continue
        keys = _jwks_keys(document)
        if keys is None:
            _skip(parsed, name, "malformed_bundle",
                  '"bundle_bytes" does not represent a valid jwks')
            continue
        authorities: dict[str, Any] = {}
        for jwk in keys:
            kid, key, reason = _authority(jwk)
            if reason is None and kid in authorities:
                reason = "duplicate_kid"
            if reason is not None or kid is None:
                _skip(parsed, name, reason or "malformed_key", _WORDS[reason or "malformed_key"])
                continue
            authorities[kid] = key
        parsed.bundles.put(JwtBundle(trust_domain, authorities))
    return parsed


_WORDS = {
    "no_kid": 'a key without "keyID" (kid)',
    "unsupported_kty": "a key of a type no JWT-SVID uses (not a public RSA, EC or OKP key)",
    "malformed_key": "a malformed key",
    "duplicate_kid": "a second key under the same kid",
    "malformed_bundle": "not a JWKS document",
}


def _skip(parsed: ParsedBundles, trust_domain: str, reason: str, detail: str) -> None:
    parsed.skipped[reason] = parsed.skipped.get(reason, 0) + 1
    shown = trust_domain[:255]
    earlier = parsed.problems.get(shown)
    parsed.problems[shown] = detail if earlier is None else (
        earlier if detail in earlier else f"{earlier}; {detail}")[:500]


def _jwks_keys(document: bytes) -> list[object] | None:
    try:
        doc = json.loads(document)
    except (ValueError, UnicodeDecodeError):
        return None
    keys = doc.get("keys") if isinstance(doc, dict) else None
    return keys if isinstance(keys, list) else None


def _authority(jwk: object) -> tuple[str | None, Any, str | None]:
    """(kid, public key, None) for a usable key, else (kid or None, None, reason)."""
    if not isinstance(jwk, dict):
        return None, None, "malformed_key"
    kid = jwk.get("kid")
    if not isinstance(kid, str) or not kid:
        return None, None, "no_kid"
    if jwk.get("kty") not in _ASYMMETRIC_KTY or _PRIVATE_MEMBERS & set(jwk):
        return kid, None, "unsupported_kty"
    try:
        key = PyJWK(jwk).key
    except (PyJWTError, ValueError, TypeError, KeyError):
        return kid, None, "malformed_key"
    if not isinstance(key, _PUBLIC):
        return kid, None, "unsupported_kty"
    return kid, key, None


class BundleParsingClient(WorkloadApiClient):
    """py-spiffe's client with the bundle stream parsed by `parse_bundles`: an update
    never raises inside py-spiffe's watch loop, so the watch never stops on content.
    `on_parsed` hears of every update first (what was skipped)."""

    def __init__(self, socket: str, *, default_timeout: float,
                 on_parsed: Callable[[ParsedBundles], None]) -> None:
        super().__init__(socket, default_timeout=default_timeout)
        self._on_parsed = on_parsed

    def _process_jwt_bundles(self, jwt_bundles_response: Any) -> JwtBundleSet:
        # Overrides a private hook of py-spiffe 0.3 (pinned <0.4 in pyproject.toml): the
        # one place its stream turns a response into bundles.
        parsed = parse_bundles(dict(jwt_bundles_response.bundles))
        self._on_parsed(parsed)
        return parsed.bundles
