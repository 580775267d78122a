"""Entra's answers classified at the edge: the AADSTS number decides, then the HTTP
status (429, 5xx with Retry-After), then the OAuth error; Entra's words are kept, the
AADSTS prefix not twice, the trace and correlation IDs always."""

from __future__ import annotations

import pytest

from bridge.clouds.azure.classify import classify, discovery_failed

TRACE = "Trace ID: 0fef3402-ebe5-44c2-9ef3-cf22cbdf49c6"


def _result(code: int | None, error: str = "invalid_client",
            words: str = "something") -> dict[str, object]:
    description = (f"AADSTS{code}: {words}\r\n" if code else f"{words}\r\n") + TRACE
    return {"error": error, "error_description": description,
            "error_codes": [code] if code else []}


@pytest.mark.parametrize(("code", "reason", "retryable", "fresh"), [
    (700016, "unknown_client", False, False),
    (90002, "unknown_tenant", False, False),
    (70021, "no_federated_credential", False, False),
    (700211, "issuer_mismatch", False, False),
    (700212, "audience_mismatch", False, False),
    (700213, "subject_mismatch", False, False),
    (7002138, "subject_mismatch", False, False),
    (700024, "token_expired", True, True),
    (7000272, "invalid_token", True, True),
    (700027, "invalid_token", True, True),
    (500011, "invalid_scope", False, False),
    (1002012, "invalid_scope", False, False),
    (90055, "throttled", True, False),
])
def test_aadsts_numbers(code: int, reason: str, retryable: bool, fresh: bool) -> None:
    err = classify(_result(code), status=400, retry_after=None)
    assert (err.code, err.reason, err.retryable, err.fresh_svid) == (
        f"AADSTS{code}", reason, retryable, fresh)
    assert str(err).count(f"AADSTS{code}") == 1
    assert TRACE in str(err)


@pytest.mark.parametrize(("status", "reason"), [(429, "throttled"), (500, "unavailable"),
                                                (503, "unavailable")])
def test_status_before_number(status: int, reason: str) -> None:
    """A 429/5xx is retried whatever the body says, and carries Retry-After."""
    err = classify(_result(700016), status=status, retry_after=30.0)
    assert (err.reason, err.retryable, err.retry_after) == (reason, True, 30.0)


def test_the_number_from_the_description_when_error_codes_is_missing() -> None:
    result = {"error": "invalid_client", "error_description": "AADSTS700213: no match"}
    assert classify(result, status=401, retry_after=None).reason == "subject_mismatch"


def test_unknown_codes_are_permanent_but_oauth_words_count() -> None:
    assert classify(_result(999999), status=400, retry_after=None).retryable is False
    err = classify(_result(None, error="temporarily_unavailable"), status=None,
                   retry_after=None)
    assert (err.reason, err.retryable) == ("unavailable", True)


def test_long_descriptions_are_bounded_but_keep_the_ids() -> None:
    err = classify(_result(700213, words="x" * 5000), status=401, retry_after=None)
    assert len(str(err)) < 500
    assert TRACE in str(err)


def test_tenant_discovery_refusal_is_an_unknown_tenant() -> None:
    try:
        raise ValueError("OIDC Discovery failed on https://h/t. HTTP status: 400, Error: x")
    except ValueError as cause:
        try:
            raise ValueError("Unable to get authority configuration") from cause
        except ValueError as wrapped:
            wrapped.__context__ = cause
            err = discovery_failed(wrapped, "https://h/t")
    assert (err.code, err.reason, err.retryable) == ("AADSTS90002", "unknown_tenant", False)
