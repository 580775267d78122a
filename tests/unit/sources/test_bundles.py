"""parse_bundles: every usable key kept, every other one skipped with a reason."""

from __future__ import annotations

import json
from typing import Any

from spiffe import TrustDomain

from bridge.devstack import JwtAuthority
from bridge.sources.bundles import SKIP_REASONS, parse_bundles


def _honest() -> dict[str, Any]:
    return JwtAuthority("example.org").spiffe_bundle()


def test_an_honest_bundle_is_kept_whole() -> None:
    doc = _honest()
    parsed = parse_bundles({"example.org": json.dumps(doc).encode()})
    bundle = parsed.bundles.get_bundle_for_trust_domain(TrustDomain("example.org"))
    assert bundle is not None
    assert bundle.get_jwt_authority(doc["keys"][0]["kid"]) is not None
    assert parsed.skipped == {}
    assert parsed.problems == {}


def test_each_unusable_key_is_skipped_and_the_rest_kept() -> None:
    doc = _honest()
    kid = doc["keys"][0]["kid"]
    private = {**doc["keys"][0], "kid": "priv", "d": "AAAA"}
    keys = [*doc["keys"], {"kty": "oct", "k": "c2VjcmV0", "kid": kid},
            {"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA"}, private,
            {"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA", "kid": "broken"},
            {**doc["keys"][0]}, "not an object"]
    parsed = parse_bundles({"example.org": json.dumps({"keys": keys}).encode()})
    bundle = parsed.bundles.get_bundle_for_trust_domain(TrustDomain("example.org"))
    assert bundle is not None
    assert bundle.get_jwt_authority(kid) is not None  # the real key, not the oct one
    assert parsed.skipped == {"unsupported_kty": 2, "no_kid": 1, "malformed_key": 2,
                              "duplicate_kid": 1}
    assert set(parsed.skipped) <= set(SKIP_REASONS)
    assert "example.org" in parsed.problems


def test_a_malformed_document_drops_only_its_trust_domain() -> None:
    parsed = parse_bundles({"example.org": json.dumps(_honest()).encode(),
                            "other.example": b"{not json", "third.example": b"[1, 2]"})
    assert parsed.bundles.get_bundle_for_trust_domain(TrustDomain("example.org"))
    assert parsed.bundles.get_bundle_for_trust_domain(TrustDomain("other.example")) is None
    assert parsed.skipped == {"malformed_bundle": 2}
    assert "valid jwks" in parsed.problems["other.example"]
