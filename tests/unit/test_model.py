"""Secret-bearing values never show their material in repr/str (logs, tracebacks)."""

from __future__ import annotations

import time

from bridge.errors import ExchangeError
from bridge.model import TargetStatus, utc_iso
from tests.support.values import fresh_status, svid


def test_reprs_of_credentials_svids_and_statuses_hide_secrets() -> None:
    """repr() of every value that carries material shows none of it."""
    now = time.time()
    status = fresh_status("t", now=now)
    s = svid(now=now)
    full = TargetStatus(**{**{f: getattr(status, f) for f in status.__slots__}, "svid": s})
    assert full.credential is not None
    aws = full.credential.material
    text = repr(full) + str(full) + repr(s) + repr(aws)
    for secret in (aws.access_key_id, aws.secret_access_key, aws.session_token, s.token):
        assert secret not in text
    assert "expires_at" in repr(aws)


def test_exchange_error_text_is_built_from_codes_not_material() -> None:
    """An ExchangeError names hop and code; it carries no request body."""
    err = ExchangeError("Incorrect token audience", hop="aws_web_identity",
                        code="InvalidIdentityToken", retryable=True, reason="invalid_token")
    assert str(err) == ("exchange: aws_web_identity: InvalidIdentityToken: "
                        "Incorrect token audience")


def test_utc_iso_is_whole_seconds_with_z() -> None:
    """SDKs parse %Y-%m-%dT%H:%M:%SZ exactly; fractions would break google-auth."""
    assert utc_iso(0.9) == "1970-01-01T00:00:00Z"
    assert utc_iso(1_900_000_000) == "2030-03-17T17:46:40Z"
