"""`GcpEmulator`: Google STS + IAM Credentials on one loopback server. DEVELOPMENT ONLY.

One server plays three Google endpoints, so google-auth itself can be the client
(`token_url` and the impersonation URL both accept `http://127.0.0.1:P`):

- `POST /v1/token` (sts.googleapis.com): the token exchange (`sts`);
- `POST /v1/projects/-/serviceAccounts/{email|id}:generateAccessToken` and
  `:generateIdToken` (iamcredentials.googleapis.com): `iam`;
- `GET /google/.well-known/openid-configuration` and `/google/oauth2/v3/certs`: the
  discovery document and JWKS of the ID tokens generateIdToken mints (`google_issuer`).

Providers and service accounts are configured through `GcpProject`. Requests are
recorded (`requests`) and every issued token is remembered (`whoami`); tokens stay in
memory, hidden from repr and never logged. `faults` is keyed by operation: `token`,
`generateAccessToken`, `generateIdToken` (or the path of the two discovery documents).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from bridge.devstack._emulator import RecordingEmulator
from bridge.devstack._http import HttpRequest, HttpResponse, form_fields
from bridge.devstack.faults import echoing
from bridge.devstack.gcp.aws_replay import AwsReplay, replay_signed_request
from bridge.devstack.gcp.context import GcpContext
from bridge.devstack.gcp.google_issuer import (
    GOOGLE_CERTS_PATH,
    GOOGLE_DISCOVERY_PATH,
    GoogleIdTokenIssuer,
)
from bridge.devstack.gcp.iam import IAM_PATH, generate_token
from bridge.devstack.gcp.project import GcpProject
from bridge.devstack.gcp.replies import IamError, StsError, answer, json_response
from bridge.devstack.gcp.sts import token_exchange
from bridge.devstack.gcp.tokens import GoogleToken, TokenStore
from bridge.devstack.jwks import IssuerKeys, JsonFetcher, fetch_json

STS_TOKEN_PATH = "/v1/token"
OP_TOKEN = "token"


@dataclass(frozen=True, slots=True)
class GoogleRecordedRequest:
    """One request as received; `form`, `json_body`, `headers` hold tokens: never print them.

    `operation` is `token`, `generateAccessToken`, `generateIdToken` or else the path.
    """

    operation: str
    method: str
    path: str
    form: Mapping[str, str] = field(repr=False)
    json_body: Any = field(repr=False)
    headers: Mapping[str, str] = field(repr=False)
    received_at: float


class GcpEmulator(GcpProject, RecordingEmulator[GoogleRecordedRequest]):
    """Google STS + IAM Credentials on `http://127.0.0.1:<port>`. Thread-safe.

    The project is configured through `GcpProject`'s `add_oidc_provider`,
    `add_aws_provider`, `set_provider_enabled` and `add_service_account`.
    """

    def __init__(
        self,
        *,
        port: int = 0,
        clock: Callable[[], float] = time.time,
        date_clock: Callable[[], float] | None = None,
        fetch: JsonFetcher = fetch_json,
        replay: AwsReplay = replay_signed_request,
        idp_timeout: float = 2.0,
        jwks_cache_seconds: float = 60.0,
    ) -> None:
        """Prepare the emulator; nothing listens until `start()`.

        `clock` drives every time check and expiry; `date_clock` (default: `clock`) dates
        the answers alone (a lagging `clock` with the real `date_clock` hands out tokens
        that end sooner than asked); `fetch` reads issuers' discovery
        documents and JWKS; `replay` sends signed GetCallerIdentity requests to AWS.
        """
        keys = IssuerKeys(fetch, timeout=idp_timeout, cache_seconds=jwks_cache_seconds)
        GcpProject.__init__(self, keys)
        RecordingEmulator.__init__(self, port=port, name="devstack-gcp")
        self._clock = clock
        self._date_clock = date_clock or clock
        self._tokens = TokenStore()
        self._issuer = GoogleIdTokenIssuer(lambda: self.url)
        self._context = GcpContext(
            project=self,
            tokens=self._tokens,
            keys=keys,
            replay=replay,
            idp_timeout=idp_timeout,
            issuer=self._issuer,
            clock=clock,
        )

    def answer_time(self) -> float:
        """The time its answers carry in `Date` now (what its clients can know of its
        clock)."""
        return self._date_clock()

    @property
    def sts_url(self) -> str:
        """The token exchange endpoint, google-auth's `token_url`."""
        return self.url + STS_TOKEN_PATH

    @property
    def google_issuer(self) -> str:
        """`iss` of the ID tokens from generateIdToken; serves OIDC discovery."""
        return self._issuer.issuer

    def impersonation_url(self, service_account: str) -> str:
        """google-auth's `service_account_impersonation_url` for this account."""
        return f"{self.url}/v1/projects/-/serviceAccounts/{service_account}:generateAccessToken"

    # -- observations --------------------------------------------------------------------

    @property
    def token_store(self) -> TokenStore:
        """Where its tokens live (the mTLS token endpoint issues into it too)."""
        return self._tokens

    @property
    def issued(self) -> tuple[GoogleToken, ...]:
        """Every access token handed out, oldest first."""
        return self._tokens.issued

    def whoami(self, token: str) -> GoogleToken | None:
        """Which principal an access token issued here belongs to (expired ones too)."""
        return self._tokens.get(token)

    def google_jwks(self) -> dict[str, Any]:
        """The JWKS of the ID-token signing key (RSA, generated on first use)."""
        return self._issuer.jwks()

    def discovery_document(self) -> dict[str, Any]:
        """The ID-token issuer's `/.well-known/openid-configuration`."""
        return self._issuer.discovery_document()

    # -- the wire --------------------------------------------------------------------------

    def handle(self, request: HttpRequest) -> HttpResponse:
        """Answer one HTTP request (public so tests can call it without a socket)."""
        iam_match = IAM_PATH.fullmatch(request.path)
        operation = request.path
        if request.path == STS_TOKEN_PATH:
            operation = OP_TOKEN
        elif iam_match is not None:
            operation = iam_match.group("method")
        form, document = _parse_body(request)
        self._record(
            GoogleRecordedRequest(
                operation=operation,
                method=request.method,
                path=request.path,
                form=form,
                json_body=document,
                headers=dict(request.headers),
                received_at=self._clock(),
            )
        )
        failure = self.faults.before(operation)
        if failure is not None:
            failure = echoing(failure, form.get("subject_token", ""))
        if operation == OP_TOKEN:
            return answer(lambda: token_exchange(self._context, request, form), StsError,
                          failure, self._date_clock())
        if iam_match is not None:
            return answer(lambda: generate_token(self._context, request, iam_match, document),
                          IamError, failure, self._date_clock())
        if failure is not None:
            return json_response(failure.status or 503, {"error": failure.code}, self._date_clock())
        if request.method == "GET" and request.path == GOOGLE_DISCOVERY_PATH:
            return json_response(200, self.discovery_document(), self._date_clock())
        if request.method == "GET" and request.path == GOOGLE_CERTS_PATH:
            return json_response(200, self.google_jwks(), self._date_clock())
        not_found = {"code": 404, "message": "Not Found", "status": "NOT_FOUND"}
        return json_response(404, {"error": not_found}, self._date_clock())


def _parse_body(request: HttpRequest) -> tuple[dict[str, str], Any]:
    """(form fields, None) for form bodies; ({}, parsed JSON or None) for JSON bodies."""
    text = request.body.decode("utf-8", "replace")
    if "json" in request.header("Content-Type"):
        try:
            return {}, json.loads(text) if text else None
        except ValueError:
            return {}, None
    return form_fields(text), None
