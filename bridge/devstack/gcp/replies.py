"""How the two Google APIs answer, errors included. DEVELOPMENT ONLY.

STS (`sts.googleapis.com`) errors are RFC 6749 JSON, `{"error", "error_description"}`,
HTTP 400 unless the code says otherwise; IAM Credentials errors are Google's JSON,
`{"error": {"code", "message", "status"}}` with a canonical status name. Every check
raises one of the two; `answer` turns a call into its JSON reply, fault switches first.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, ClassVar, Self

from bridge.devstack._http import HttpResponse, http_date
from bridge.devstack.faults import HttpFailure

_log = logging.getLogger(__name__)

# Google's HTTP status per RFC 6749 code (STS) and per canonical error status (IAM).
_STS_STATUS_CODES: Mapping[str, int] = MappingProxyType({
    "temporarily_unavailable": 503,
    "server_error": 500,
    "rate_limit_exceeded": 429,
})
_IAM_STATUS_CODES: Mapping[str, int] = MappingProxyType({
    "INVALID_ARGUMENT": 400,
    "FAILED_PRECONDITION": 400,
    "UNAUTHENTICATED": 401,
    "PERMISSION_DENIED": 403,
    "NOT_FOUND": 404,
    "RESOURCE_EXHAUSTED": 429,
    "INTERNAL": 500,
    "UNAVAILABLE": 503,
    "DEADLINE_EXCEEDED": 504,
})
_UNAVAILABLE = "The service is currently unavailable."


def json_response(status: int, document: Mapping[str, Any], now: float) -> HttpResponse:
    """A JSON reply dated `now` (the emulator's clock, not the host's)."""
    return HttpResponse(
        status,
        json.dumps(document).encode(),
        {"Content-Type": "application/json; charset=UTF-8", "Date": http_date(now)},
    )


class GoogleError(Exception):
    """An error reply of one of the two APIs; `reason` is its code, for the debug log."""

    api: ClassVar[str]
    status_codes: ClassVar[Mapping[str, int]]  # HTTP status per reason, 400 if absent

    def __init__(self, reason: str, detail: str, status: int | None = None) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.http_status = status or self.status_codes.get(reason, 400)

    @classmethod
    def from_failure(cls, failure: HttpFailure) -> Self:
        """A fault switch's failure as this API's error: its code is the reason."""
        return cls(failure.code, failure.message or _UNAVAILABLE, failure.status or None)

    def response(self, now: float) -> HttpResponse:
        """The JSON reply."""
        raise NotImplementedError


class StsError(GoogleError):
    """An RFC 6749 error reply of the STS endpoint."""

    api = "sts"
    status_codes = _STS_STATUS_CODES

    def __init__(self, error: str, description: str, status: int | None = 400) -> None:
        """`status` None: the usual one for `error` (a fault switch's failure)."""
        super().__init__(error, description, status)
        self.error = error
        self.description = description

    def response(self, now: float) -> HttpResponse:
        document = {"error": self.error, "error_description": self.description}
        return json_response(self.http_status, document, now)


class IamError(GoogleError):
    """A Google JSON error reply of IAM Credentials (canonical status name)."""

    api = "iam"
    status_codes = _IAM_STATUS_CODES

    def __init__(self, status: str, message: str, code: int | None = None) -> None:
        super().__init__(status, message, code)
        self.status = status
        self.message = message

    def response(self, now: float) -> HttpResponse:
        error = {"code": self.http_status, "message": self.message, "status": self.status}
        return json_response(self.http_status, {"error": error}, now)


def answer(
    call: Callable[[], Mapping[str, Any]],
    errors: type[GoogleError],
    failure: HttpFailure | None,
    now: float,
) -> HttpResponse:
    """The reply to `call`, or to `failure` (a fault switch) when one is given."""
    try:
        if failure is not None:
            raise errors.from_failure(failure)
        document = call()
    except errors as err:
        _log.debug("gcp %s -> %s", errors.api, err.reason)
        return err.response(now)
    _log.debug("gcp %s -> ok", errors.api)
    return json_response(200, document, now)
