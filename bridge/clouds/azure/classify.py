"""Entra's error answers, classified at the edge (PROTOCOLS.md §7).

Entra answers `{error, error_description: "AADSTSnnnn: ...", error_codes: [n], ...}`.
The AADSTS number decides; the OAuth `error` and the HTTP status only where the number
is unknown. Descriptions are Entra's own words (issuer, subject and audience of the
assertion, never the assertion), bounded; trace and correlation IDs are kept for the
operator's support ticket.
"""

from __future__ import annotations

import re

from bridge.errors import ExchangeError
from bridge.logs import bounded

HOP = "azure_entra"
# AADSTS number -> (retryable, reason, fetch a fresh SVID first)
AADSTS: dict[int, tuple[bool, str, bool]] = {
    700016: (False, "unknown_client", False),      # application not found in the directory
    90002: (False, "unknown_tenant", False),       # tenant not found
    900023: (False, "unknown_tenant", False),      # tenant identifier malformed
    70021: (False, "no_federated_credential", False),  # no federated record matches
    700211: (False, "issuer_mismatch", False),     # ... for the assertion's issuer
    700212: (False, "audience_mismatch", False),   # ... for its audience
    700213: (False, "subject_mismatch", False),    # ... for its subject
    7002137: (False, "subject_mismatch", False),
    7002138: (False, "subject_mismatch", False),
    700024: (True, "token_expired", True),         # assertion outside its validity window
    7000272: (True, "invalid_token", True),        # signing key not in the issuer's JWKS
    700027: (True, "invalid_token", True),         # assertion signature invalid
    50027: (True, "invalid_token", True),          # JWT invalid or malformed
    7000274: (True, "idp_unreachable", False),     # issuer metadata could not be fetched
    500011: (False, "invalid_scope", False),       # resource principal not found
    70011: (False, "invalid_scope", False),        # scope not valid
    1002012: (False, "invalid_scope", False),      # client credentials need /.default
    7000112: (False, "client_disabled", False),    # application disabled
    50196: (True, "throttled", False),             # client request loop
    90055: (True, "throttled", False),             # tenant throttling
    90033: (True, "unavailable", False),           # directory service unavailable
}
_OAUTH: dict[str, tuple[bool, str]] = {
    "temporarily_unavailable": (True, "unavailable"),
    "server_error": (True, "unavailable"),
    "invalid_scope": (False, "invalid_scope"),
    "invalid_resource": (False, "invalid_scope"),
    "unauthorized_client": (False, "unknown_client"),
}
_ID = re.compile(r"(Trace|Correlation) ID: [0-9a-f-]{36}")


def classify(result: dict[str, object], *, status: int | None,
             retry_after: float | None) -> ExchangeError:
    """An error `result` of msal's acquire_token_for_client; `status` and `retry_after`
    from the HTTP answer when one was seen (msal may replay a throttled answer)."""
    error = str(result.get("error", "")) or "error"
    description = str(result.get("error_description", ""))
    listed = result.get("error_codes")
    codes = [c for c in listed if isinstance(c, int)] if isinstance(listed, list) else []
    if not codes and (m := re.match(r"AADSTS(\d+)", description)):
        codes = [int(m.group(1))]
    message = _message(description) or error
    code = f"AADSTS{codes[0]}" if codes else error
    if status == 429:
        return ExchangeError(message, hop=HOP, code=code, retryable=True, reason="throttled",
                             retry_after=retry_after)
    if status is not None and status >= 500:
        return ExchangeError(message, hop=HOP, code=code, retryable=True,
                             reason="unavailable", retry_after=retry_after)
    if codes and codes[0] in AADSTS:
        retryable, reason, fresh = AADSTS[codes[0]]
        return ExchangeError(message, hop=HOP, code=code, retryable=retryable,
                             reason=reason, fresh_svid=fresh, retry_after=retry_after)
    if error in _OAUTH:
        retryable, reason = _OAUTH[error]
        return ExchangeError(message, hop=HOP, code=code, retryable=retryable,
                             reason=reason, retry_after=retry_after)
    # An Entra refusal we do not know: a config or directory fix, retried at the cap.
    return ExchangeError(message, hop=HOP, code=code, retryable=False, reason="rejected")


def unreachable(exc: BaseException, authority: str) -> ExchangeError:
    return ExchangeError(f"cannot reach Entra at {authority}: {type(exc).__name__}", hop=HOP,
                         code="ConnectionError", retryable=True, reason="unreachable")


def discovery_failed(exc: ValueError, authority: str) -> ExchangeError:
    """msal's tenant discovery (`<authority>/v2.0/.well-known/openid-configuration`)
    refused: a 4xx there is an unknown tenant."""
    text = f"{exc} {exc.__context__ or ''}"  # msal re-raises its own words over the cause
    m = re.search(r"HTTP status: (\d+)", text)
    if m and 400 <= int(m.group(1)) < 500:
        return ExchangeError(f"no tenant at {authority} (its OpenID configuration answered "
                             f"{m.group(1)}): check tenant_id and authority_host", hop=HOP,
                             code="AADSTS90002", retryable=False, reason="unknown_tenant")
    return ExchangeError(f"tenant discovery at {authority} failed", hop=HOP,
                         code="DiscoveryFailed", retryable=True, reason="unavailable")


def _message(description: str) -> str:
    """Entra's first line (its number and words), with the trace and correlation IDs."""
    first = description.replace("\r\n", "\n").split("\n", 1)[0].strip()
    first = re.sub(r"^AADSTS\d+: ", "", first)  # the code is the error's own field
    ids = "; ".join(m.group(0) for m in _ID.finditer(description))
    return f"{bounded(first, 220)} ({ids})" if ids else bounded(first)
