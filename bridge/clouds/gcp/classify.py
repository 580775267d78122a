"""Google's error answers, classified at the edge: RFC 6749 `error` codes from STS,
`status` words from IAM Credentials. Messages are Google's own descriptions, bounded;
they carry no token material."""

from __future__ import annotations

import json
import re

from google.auth import exceptions

from bridge.errors import ExchangeError
from bridge.logs import bounded

# RFC 6749 codes from Google STS -> (retryable, reason, fetch a fresh SVID first)
STS_CODES: dict[str, tuple[bool, str, bool]] = {
    "invalid_request": (False, "invalid_request", False),
    "invalid_target": (False, "invalid_target", False),
    "unauthorized_client": (False, "condition_rejected", False),
    "invalid_client": (False, "invalid_request", False),
    "invalid_scope": (False, "invalid_request", False),
    "temporarily_unavailable": (True, "unavailable", False),
    "rate_limit_exceeded": (True, "throttled", False),  # HTTP 429
    "server_error": (True, "unavailable", False),
}
# IAM Credentials `status` -> (retryable, reason)
IAM_STATUS: dict[str, tuple[bool, str]] = {
    "INVALID_ARGUMENT": (False, "invalid_request"),
    "FAILED_PRECONDITION": (False, "invalid_request"),
    "PERMISSION_DENIED": (False, "access_denied"),
    "UNAUTHENTICATED": (True, "invalid_token"),
    "NOT_FOUND": (False, "not_found"),
    "RESOURCE_EXHAUSTED": (True, "throttled"),
    "UNAVAILABLE": (True, "unavailable"),
    "INTERNAL": (True, "unavailable"),
    "DEADLINE_EXCEEDED": (True, "timeout"),
}



def classify_sts(exc: Exception) -> ExchangeError:
    if isinstance(exc, exceptions.TransportError):
        return ExchangeError(f"cannot reach GCP STS: {_short(exc)}", hop="gcp_sts",
                             code="ConnectionError", retryable=True, reason="unreachable")
    body = _body(exc)
    code = str(body.get("error", "")) if isinstance(body, dict) else ""
    text = bounded(str(body.get("error_description", ""))) if isinstance(body, dict) else (
        _short(exc))
    if not code:
        m = re.search(r"Error code (\w+)", str(exc))
        code = m.group(1) if m else type(exc).__name__
        if not m:
            text = _short(exc)
    if code == "invalid_grant":
        lowered = text.lower()
        if "audience" in lowered:
            return ExchangeError(text, hop="gcp_sts", code=code, retryable=False,
                                 reason="audience_mismatch")
        expired = "expir" in lowered
        return ExchangeError(text, hop="gcp_sts", code=code, retryable=True,
                             reason="token_expired" if expired else "invalid_token",
                             fresh_svid=True)
    retryable, reason, fresh = STS_CODES.get(code, (True, "unavailable", False))
    return ExchangeError(text or code, hop="gcp_sts", code=code, retryable=retryable,
                         reason=reason, fresh_svid=fresh)


def classify_iam_refresh(exc: Exception, *, hop: str) -> ExchangeError:
    if isinstance(exc, exceptions.TransportError):
        return ExchangeError(f"cannot reach IAM Credentials: {_short(exc)}", hop=hop,
                             code="ConnectionError", retryable=True, reason="unreachable")
    if isinstance(exc, exceptions.OAuthError):  # the federated refresh inside impersonation
        return classify_sts(exc)
    raw = exc.args[1] if len(exc.args) > 1 else ""
    return classify_iam(0, raw, hop=hop)


def classify_iam(status: int, raw: object, *, hop: str) -> ExchangeError:
    try:
        error = json.loads(raw if isinstance(raw, str | bytes) else "{}").get("error", {})
    except (ValueError, AttributeError):
        error = {}
    if not isinstance(error, dict):
        error = {}
    state = str(error.get("status", "")) or {400: "INVALID_ARGUMENT", 403: "PERMISSION_DENIED",
                                              404: "NOT_FOUND", 429: "RESOURCE_EXHAUSTED"
                                              }.get(status, "UNAVAILABLE")
    retryable, reason = IAM_STATUS.get(state, (True, "unavailable"))
    message = bounded(str(error.get("message", f"HTTP {status}")))
    return ExchangeError(message, hop=hop, code=state, retryable=retryable, reason=reason)


def _body(exc: Exception) -> object:
    raw = exc.args[1] if len(exc.args) > 1 else None
    try:
        return json.loads(raw) if isinstance(raw, str | bytes) else {}
    except ValueError:
        return {}


def _short(exc: Exception) -> str:
    return bounded(str(exc.args[0] if exc.args else exc), 200)
