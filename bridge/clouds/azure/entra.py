"""The Entra hop on msal: client credentials with a federated `client_assertion`.

msal's `ConfidentialClientApplication` sends Entra's token request (PROTOCOLS.md §7:
`client_assertion_type=...jwt-bearer`, `scope=<resource>/.default`) and hands back
Entra's answer as a dict, `error_codes` included. Two of its habits are turned off here:

- its token cache would answer later exchanges with the first token (and never send the
  new SVID): the application's cache stores nothing (`_NoStore`, through msal's public
  `TokenCache.add`). One application per hop keeps msal's `http_cache`: tenant
  discovery (read once, at the first exchange) and its throttling (a 429/5xx with
  `Retry-After` is replayed, not re-sent, until it passes). Applications share no
  cache: msal's cache index is guarded per application, not per dict;
- instance discovery (a call to login.microsoftonline.com to vet the host) is off: the
  host is the operator's `authority_host`.

HTTP goes through `EntraHttp` (requests, msal's own transport): our deadline, no
proxies but the environment's, and each answer's status, `Retry-After` and `Date` kept
per thread for the classification and the skew estimate.
"""

from __future__ import annotations

import http.cookiejar
import threading
import time
from collections.abc import Callable
from typing import Any

import msal
import msal.exceptions
import requests

from bridge.clouds.azure.classify import HOP, classify, discovery_failed, unreachable
from bridge.clouds.azure.config import AzureHopConfig
from bridge.clouds.azure.material import AzureToken
from bridge.clouds.base import wrong_input
from bridge.errors import ExchangeError
from bridge.model import IdToken, JwtSvid, Material
from bridge.skew import ClockSkew, parse_http_date

SKEW_SERVICE = "azure"  # the clock_skew_seconds{service} of Entra's answers


class EntraHttp:
    """msal's `http_client`: a requests session with our deadline, recording per thread
    the last answer's (status, Retry-After seconds) and feeding `Date` to the skew."""

    def __init__(self, *, timeout: float, skew: ClockSkew | None,
                 now: Callable[[], float] = time.time) -> None:
        self._session = requests.Session()
        # Entra sets cookies; a daemon serving many tenants keeps none of them.
        self._session.cookies.set_policy(http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))
        self._timeout = timeout
        self._skew = skew
        self._now = now
        self._last = threading.local()

    def post(self, url: str, **kw: Any) -> requests.Response:
        return self._send("POST", url, **kw)

    def get(self, url: str, **kw: Any) -> requests.Response:
        return self._send("GET", url, **kw)

    def close(self) -> None:
        self._session.close()

    def forget(self) -> None:
        self._last.answer = None

    def last_answer(self) -> tuple[int, float | None] | None:
        answer: tuple[int, float | None] | None = getattr(self._last, "answer", None)
        return answer

    def _send(self, method: str, url: str, **kw: Any) -> requests.Response:
        kw["timeout"] = self._timeout
        kw.setdefault("allow_redirects", False)
        sent = self._now()
        response = self._session.request(method, url, **kw)
        self._last.answer = (response.status_code, _retry_after(response.headers))
        if self._skew is not None:
            self._skew.observe(SKEW_SERVICE, response.headers.get("Date"), sent, self._now())
        return response


class _NoStore(msal.TokenCache):  # type: ignore[misc] # msal is untyped
    """A token cache that keeps nothing: every exchange reaches Entra with its SVID."""

    def add(self, event: Any, now: Any = None) -> None:
        return None


class EntraHop:
    """JWT-SVID or ID token -> Entra access token for one resource."""

    name = HOP

    def __init__(self, target: AzureHopConfig, *, http: EntraHttp,
                 now: Callable[[], float] = time.time) -> None:
        self._target = target
        self.scope = f"azure_entra {target.authority_host}"
        self.judge = SKEW_SERVICE
        self._http = http
        self._now = now
        self._lock = threading.Lock()  # one exchange at a time: the assertion is per call
        self._assertion = ""
        self._app: Any = None

    def _application(self) -> Any:
        """Made at the first exchange (its tenant discovery is a call to Entra)."""
        if self._app is None:
            t = self._target
            self._app = msal.ConfidentialClientApplication(
                t.client_id, authority=t.authority,
                client_credential={"client_assertion": lambda: self._assertion},
                http_client=self._http, instance_discovery=False, token_cache=_NoStore())
        return self._app

    def exchange(self, material: Material) -> AzureToken:
        if not isinstance(material, JwtSvid | IdToken):
            raise wrong_input(self.name, material)
        with self._lock:
            return self._exchange(material.token)

    def _exchange(self, assertion: str) -> AzureToken:
        t = self._target
        self._assertion = assertion
        self._http.forget()
        sent = self._now()
        try:
            result = self._application().acquire_token_for_client([t.scope])
        except requests.RequestException as exc:
            raise unreachable(exc, t.authority) from None
        except msal.exceptions.MsalServiceError:  # a 5xx answer without an Entra body
            answer = self._http.last_answer()
            raise classify({"error": "server_error"}, status=answer[0] if answer else 503,
                           retry_after=answer[1] if answer else None) from None
        except ValueError as exc:  # tenant discovery refused (msal raises it bare)
            raise discovery_failed(exc, t.authority) from None
        finally:
            self._assertion = ""
        if not isinstance(result, dict):
            raise _bad_answer()
        token = result.get("access_token")
        if not isinstance(token, str) or not token:
            answer = self._http.last_answer()
            raise classify(result, status=answer[0] if answer else None,
                           retry_after=answer[1] if answer else None)
        expires_in = result.get("expires_in")
        try:
            lifetime = float(expires_in)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise _bad_answer() from None
        return AzureToken(access_token=token, expires_at=sent + lifetime,
                          tenant_id=t.tenant_id, client_id=t.client_id, resource=t.resource,
                          token_type=str(result.get("token_type") or "Bearer"))


def _bad_answer() -> ExchangeError:
    return ExchangeError("no access_token or expires_in in Entra's answer", hop=HOP,
                         code="BadResponse", retryable=True, reason="unavailable")


def _retry_after(headers: Any) -> float | None:
    """`Retry-After` as seconds: delta-seconds or an HTTP-date."""
    value = headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        at = parse_http_date(value)
        return max(0.0, at - time.time()) if at is not None else None


class EntraIdToken:
    """The Entra token as the next hop's ID token (its `aud` is the hop's resource, which
    the chain rules made the next hop's audience): no call, a change of type."""

    name = "azure_id_token"
    judge = SKEW_SERVICE

    def __init__(self, target: AzureHopConfig) -> None:
        self._target = target
        self.scope = f"azure_entra {target.authority_host}"

    def exchange(self, material: Material) -> IdToken:
        if not isinstance(material, AzureToken):
            raise wrong_input(self.name, material)
        return IdToken(token=material.access_token, subject=self._target.client_id,
                       expires_at=material.expires_at)
