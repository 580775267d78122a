"""`AwsStsEmulator`: STS's query protocol on loopback, routed to the actions. DEVELOPMENT ONLY.

It speaks STS's real wire format: form-urlencoded `POST /` (or a query string),
`Version=2011-06-15`, namespaced XML replies, `<ErrorResponse>` with AWS's codes and
HTTP statuses. Each action has its own module: `web_identity`, `assume_role`,
`caller_identity`; providers and roles live in `roles`, issued sessions in `sessions`.

The JWKS is fetched over real HTTP (no proxies, short timeout), cached per issuer and
refetched once when a token names an unknown `kid`. Received requests are recorded for
assertions (`requests`); tokens and secrets are kept in memory only, hidden from repr
and never logged. `faults` (keyed by Action) injects failures such as
(503, "ServiceUnavailable") or (400, "Throttling") and latency.
"""

from __future__ import annotations

import logging
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from bridge.devstack._emulator import RecordingEmulator
from bridge.devstack._http import HttpRequest, HttpResponse, form_fields, http_date
from bridge.devstack.aws.assume_role import assume_role
from bridge.devstack.aws.caller_identity import get_caller_identity
from bridge.devstack.aws.context import Action, StsContext
from bridge.devstack.aws.documents import error_document, response_document
from bridge.devstack.aws.errors import StsError
from bridge.devstack.aws.roles import IamDirectory
from bridge.devstack.aws.roles_anywhere import RolesAnywhere
from bridge.devstack.aws.sessions import IssuedCredentials, SessionStore
from bridge.devstack.aws.web_identity import assume_role_with_web_identity
from bridge.devstack.faults import echoing
from bridge.devstack.jwks import IssuerKeys, JsonFetcher, fetch_json

_log = logging.getLogger(__name__)

STS_VERSION = "2011-06-15"
ASSUME_ROLE_WITH_WEB_IDENTITY = "AssumeRoleWithWebIdentity"
ASSUME_ROLE = "AssumeRole"
GET_CALLER_IDENTITY = "GetCallerIdentity"

_ACTIONS: Mapping[str, Action] = MappingProxyType({
    ASSUME_ROLE_WITH_WEB_IDENTITY: assume_role_with_web_identity,
    ASSUME_ROLE: assume_role,
    GET_CALLER_IDENTITY: get_caller_identity,
})


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """One request as received. `params` holds the token: never print it."""

    method: str
    path: str
    action: str
    params: Mapping[str, str] = field(repr=False)
    headers: Mapping[str, str] = field(repr=False)
    received_at: float


class AwsStsEmulator(IamDirectory, RecordingEmulator[RecordedRequest]):
    """STS on `http://127.0.0.1:<port>`: providers, roles, validation, recording. Thread-safe.

    The account is configured through `IamDirectory`'s `register_oidc_provider` and
    `add_role`.
    """

    def __init__(
        self,
        *,
        port: int = 0,
        clock: Callable[[], float] = time.time,
        date_clock: Callable[[], float] | None = None,
        fetch: JsonFetcher = fetch_json,
        idp_timeout: float = 2.0,
        jwks_cache_seconds: float = 60.0,
    ) -> None:
        """Prepare the emulator; nothing listens until `start()`.

        `clock` drives `exp` checks, credential expiry and the `Date` header, so a test
        can play clock skew; `date_clock` (default: `clock`) dates the answers alone: a
        lagging `clock` with the real `date_clock` is an STS handing out sessions that
        end sooner than asked. `fetch` is how discovery documents and JWKS are read.
        """
        keys = IssuerKeys(fetch, timeout=idp_timeout, cache_seconds=jwks_cache_seconds)
        IamDirectory.__init__(self, keys)
        RecordingEmulator.__init__(self, port=port, name="devstack-aws-sts")
        self._clock = clock
        self._date_clock = date_clock or clock
        self._sessions = SessionStore()
        self._context = StsContext(self, self._sessions, keys, clock)
        # IAM Roles Anywhere's CreateSession (`POST /sessions`), issuing into the same
        # sessions, so what it hands out signs AssumeRole here.
        self.roles_anywhere = RolesAnywhere(self._sessions, clock, date_clock=self._date_clock,
                                            faults=self.faults)

    def answer_time(self) -> float:
        """The time its answers carry in `Date` now (what its clients can know of its
        clock)."""
        return self._date_clock()

    def clear_jwks_cache(self) -> None:
        """Forget every cached JWKS (the next token refetches its issuer's keys)."""
        self._context.keys.forget()

    @property
    def issued(self) -> tuple[IssuedCredentials, ...]:
        """Every set of credentials handed out, oldest first."""
        return self._sessions.issued

    # -- the wire --------------------------------------------------------------------------

    def handle(self, request: HttpRequest) -> HttpResponse:
        """Answer one HTTP request (public so tests can call it without a socket)."""
        if request.path == "/sessions":
            return self.roles_anywhere.handle(request)
        request_id = str(uuid.uuid4())
        body = request.body.decode("utf-8", "replace") if request.method == "POST" else ""
        params = form_fields(request.query, body)
        action = params.get("Action", "")
        self._record(
            RecordedRequest(
                method=request.method,
                path=request.path,
                action=action,
                params=params,
                headers=dict(request.headers),
                received_at=self._clock(),
            )
        )
        try:
            result = self._dispatch(action, params, request)
        except StsError as err:
            _log.debug("sts %s -> %s", action or "-", err.code)
            return self._reply(err.status, error_document(err, request_id), request_id)
        _log.debug("sts %s -> ok", action)
        document = response_document(action, result, request_id)
        return self._reply(200, document, request_id)

    def _dispatch(self, action: str, params: Mapping[str, str], request: HttpRequest) -> ET.Element:
        """Fault switches, then routing; raises StsError for every error reply."""
        failure = self.faults.before(action)
        if failure is not None:
            raise StsError.from_failure(echoing(failure, params.get("WebIdentityToken", "")))
        if request.path != "/" or request.method not in ("GET", "POST"):
            raise StsError(404, "NotFound", "Not Found")
        if not action:
            raise StsError(400, "MissingAction", "Missing Action")
        handler = _ACTIONS.get(action)
        if handler is None or params.get("Version") != STS_VERSION:
            raise StsError.of(
                "InvalidAction",
                f"Could not find operation {action} for version {params.get('Version', '')}",
            )
        return handler(self._context, params, request)

    def _reply(self, status: int, body: bytes, request_id: str) -> HttpResponse:
        headers = {
            "Content-Type": "text/xml",
            "x-amzn-RequestId": request_id,
            "Date": http_date(self._date_clock()),
        }
        return HttpResponse(status, body, headers)
