"""Entra's error answers (`AADSTS` codes) and JSON replies. DEVELOPMENT ONLY.

The body is Entra's: `error`, `error_description` ("AADSTSnnnn: words\\r\\nTrace ID:
...\\r\\nCorrelation ID: ...\\r\\nTimestamp: ..."), `error_codes`, `timestamp`,
`trace_id`, `correlation_id`, `error_uri`. Codes and HTTP statuses as Entra sends them
for these cases (as seen in public reports): 400 for `invalid_request`,
`unauthorized_client`, `invalid_scope`, `invalid_resource`; 401 for `invalid_client`.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime

from bridge.devstack._http import HttpResponse, http_date

_STATUS = {"invalid_client": 401}


class EntraError(Exception):
    """An Entra refusal: the OAuth `error`, the AADSTS number and its words."""

    def __init__(self, error: str, code: int, message: str, *, status: int | None = None,
                 headers: Mapping[str, str] | None = None) -> None:
        super().__init__(f"AADSTS{code}: {message}")
        self.error = error
        self.code = code
        self.message = message
        self.status = status or _STATUS.get(error, 400)
        self.headers = dict(headers or {})


def error_response(err: EntraError, now: float, *, authority: str) -> HttpResponse:
    trace, correlation = str(uuid.uuid4()), str(uuid.uuid4())
    stamp = datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    body = {
        "error": err.error,
        "error_description": f"AADSTS{err.code}: {err.message}\r\nTrace ID: {trace}\r\n"
                             f"Correlation ID: {correlation}\r\nTimestamp: {stamp}",
        "error_codes": [err.code],
        "timestamp": stamp,
        "trace_id": trace,
        "correlation_id": correlation,
        "error_uri": f"{authority}/error?code={err.code}",
    }
    return json_response(err.status, body, now, **err.headers)


def json_response(status: int, document: object, now: float | None = None,
                  **headers: str) -> HttpResponse:
    return HttpResponse(status, json.dumps(document).encode(), {
        "Content-Type": "application/json; charset=utf-8", "Cache-Control": "no-store",
        "Date": http_date(time.time() if now is None else now), **headers})
