"""`EntraEmulator`: Entra ID's token endpoint for one or more tenants, over https on
loopback. DEVELOPMENT ONLY.

- `GET /<tenant>/v2.0/.well-known/openid-configuration`: tenant discovery (msal reads
  it first; an unknown tenant answers 400 AADSTS90002);
- `GET /<tenant>/discovery/v2.0/keys`: the JWKS of the tokens it issues;
- `POST /<tenant>/oauth2/v2.0/token`: the client-credentials grant with a federated
  client assertion (`grant`).

https because msal and azure-identity take nothing else; clients trust the CA of
`certificates` (`ca_file` once started with a `workdir`). The directory (tenants,
apps, federated credentials, resources) is configured through `directory`. Requests
are recorded (`requests`) and issued tokens kept (`issued`, `whoami`), never printed.
`faults` is keyed by operation: `token`, or a discovery path; a 429 or 503 fault
carries `Retry-After: retry_after`; ECHO_TOKEN in a fault's message is replaced by the
request's client assertion (a service quoting the request in its error).
"""

from __future__ import annotations

import json
import re
import ssl
import time
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from bridge.devstack._emulator import RecordingEmulator
from bridge.devstack._http import HttpRequest, HttpResponse, form_fields
from bridge.devstack.azure.directory import Directory
from bridge.devstack.azure.grant import GrantContext, client_credentials
from bridge.devstack.azure.replies import EntraError, error_response, json_response
from bridge.devstack.azure.tokens import EntraToken, EntraTokenIssuer
from bridge.devstack.faults import echoing
from bridge.devstack.jwks import IssuerKeys, JsonFetcher
from bridge.devstack.tls import DevCertificates

OP_TOKEN = "token"
_TOKEN = re.compile(r"/(?P<tenant>[^/]+)/oauth2/v2\.0/token")
_DISCOVERY = re.compile(r"/(?P<tenant>[^/]+)/v2\.0/\.well-known/openid-configuration")
_KEYS = re.compile(r"/(?P<tenant>[^/]+)/discovery/v2\.0/keys")
_MAX_DOCUMENT = 1 << 20


@dataclass(frozen=True, slots=True)
class EntraRecordedRequest:
    """One request as received; `form` and `headers` hold assertions: never print them."""

    operation: str
    method: str
    path: str
    tenant: str
    form: Mapping[str, str] = field(repr=False)
    headers: Mapping[str, str] = field(repr=False)
    received_at: float


def fetcher(certificates: DevCertificates) -> JsonFetcher:
    """Reads discovery documents and JWKS over http, or https trusting the dev CA."""
    context = certificates.client_context()

    def fetch(url: str, timeout: float) -> Any:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"not an http(s) URL: {url!r}")
        handlers: list[Any] = [urllib.request.ProxyHandler({}),
                               urllib.request.HTTPSHandler(context=context)]
        opener = urllib.request.build_opener(*handlers)
        request = urllib.request.Request(url, headers={"Accept": "application/json"})
        with opener.open(request, timeout=timeout) as response:
            return json.loads(response.read(_MAX_DOCUMENT))
    return fetch


class EntraEmulator(RecordingEmulator[EntraRecordedRequest]):
    """Entra's token endpoint on `https://127.0.0.1:<port>`. Thread-safe."""

    def __init__(self, *, certificates: DevCertificates | None = None, port: int = 0,
                 clock: Callable[[], float] = time.time, fetch: JsonFetcher | None = None,
                 idp_timeout: float = 2.0, jwks_cache_seconds: float = 60.0) -> None:
        self.certificates = certificates or DevCertificates.generate()
        super().__init__(port=port, name="devstack-entra",
                         tls=self.certificates.server_context())
        self.directory = Directory()
        self.retry_after = 5
        self.token_lifetime: int | None = None  # fixed lifetimes (seconds), for refresh tests
        self._clock = clock
        self._keys = IssuerKeys(fetch or fetcher(self.certificates), timeout=idp_timeout,
                                cache_seconds=jwks_cache_seconds)
        self._issuer = EntraTokenIssuer(lambda: self.url, clock)
        self._grant = GrantContext(self.directory, self._keys, self._issuer, clock,
                                   lambda: self.token_lifetime)

    @property
    def authority_host(self) -> str:
        """The `authority_host` for the bridge (AZURE_AUTHORITY_HOST for azure-identity)."""
        return self.url

    def token_url(self, tenant_id: str) -> str:
        return f"{self.url}/{tenant_id}/oauth2/v2.0/token"

    def v2_issuer(self, tenant_id: str) -> str:
        """`iss` of its version 2 tokens (what AWS/GCP trust for Azure->X chains)."""
        return self._issuer.v2_issuer(tenant_id)

    def client_context(self) -> ssl.SSLContext:
        return self.certificates.client_context()

    @property
    def issued(self) -> tuple[EntraToken, ...]:
        return self._issuer.issued

    def whoami(self, token: str) -> EntraToken | None:
        return self._issuer.whoami(token)

    def forget_issuer_keys(self) -> None:
        self._keys.forget()

    def handle(self, request: HttpRequest) -> HttpResponse:
        """Answer one HTTP request (public so tests can call it without a socket)."""
        now = self._clock()
        match = (_TOKEN.fullmatch(request.path) or _DISCOVERY.fullmatch(request.path)
                 or _KEYS.fullmatch(request.path))
        tenant = match.group("tenant") if match else ""
        token_call = _TOKEN.fullmatch(request.path) is not None
        operation = OP_TOKEN if token_call else request.path
        form = form_fields(request.body.decode("utf-8", "replace")) if token_call else {}
        self._record(EntraRecordedRequest(operation, request.method, request.path, tenant,
                                          form, dict(request.headers), now))
        try:
            return self._answer(request, match, tenant, form, now)
        except EntraError as err:
            return error_response(err, now, authority=self.url)

    def _answer(self, request: HttpRequest, match: re.Match[str] | None, tenant: str,
                form: Mapping[str, str], now: float) -> HttpResponse:
        failure = self.faults.before(OP_TOKEN if form or _TOKEN.fullmatch(request.path)
                                     else request.path)
        if failure is not None:
            failure = echoing(failure, form.get("client_assertion", ""))
            status = failure.status or 503
            headers = {"Retry-After": str(self.retry_after)} if status in (429, 503) else {}
            # 90055 TenantThrottlingError, 90033 directory unavailable
            raise EntraError(failure.code or "temporarily_unavailable",
                             90055 if status == 429 else 90033,
                             failure.message or "The service is temporarily unavailable.",
                             status=status, headers=headers)
        if match is None:
            return json_response(404, {"error": "not_found"}, now)
        if _TOKEN.fullmatch(request.path):
            if request.method != "POST":
                return json_response(405, {"error": "invalid_request"}, now)
            return json_response(200, client_credentials(self._grant, tenant, form), now)
        if self.directory.tenant(tenant) is None:
            raise EntraError("invalid_tenant", 90002, f"Tenant '{tenant}' not found.")
        if _KEYS.fullmatch(request.path):
            return json_response(200, self._issuer.jwks(), now)
        return json_response(200, self._discovery(tenant), now)

    def _discovery(self, tenant: str) -> dict[str, Any]:
        base = f"{self.url}/{tenant}"
        return {
            "token_endpoint": f"{base}/oauth2/v2.0/token",
            "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt",
                                                      "client_secret_basic"],
            "jwks_uri": f"{base}/discovery/v2.0/keys",
            "response_modes_supported": ["query", "fragment", "form_post"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
            "issuer": self.v2_issuer(tenant),
            "request_uri_parameter_supported": False,
            "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
            "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
            "end_session_endpoint": f"{base}/oauth2/v2.0/logout",
            "claims_supported": ["sub", "iss", "aud", "exp", "iat", "nbf", "tid", "ver"],
            "tenant_region_scope": "EU",
            "cloud_instance_name": "microsoftonline.com",
        }
