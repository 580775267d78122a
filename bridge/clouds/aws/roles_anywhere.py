"""IAM Roles Anywhere `CreateSession`: an X.509-SVID -> an AWS role session.

`POST https://rolesanywhere.<region>.amazonaws.com/sessions` with a JSON body
(`trustAnchorArn`, `profileArn`, `roleArn`, `durationSeconds`, optional
`roleSessionName`), signed with the SVID's own key (`x509_signer`); the answer is a
`credentialSet` whose first element carries the session (PROTOCOLS.md §10).

There is no SDK operation for it (AWS: "CreateSession is not included in any SDK"),
so the request is built, signed and sent on botocore's own primitives (`AWSRequest`,
`SigV4Auth`, its urllib3 session) with our deadline and no retries of its own: the
scheduler owns retries. Every refusal comes back as `ExchangeError` with AWS's code and
a bounded reason (`_classify`). The session ends when AWS says (`expiration`, judged by
the answer's `Date`): AWS's documented rule is now + min(profile's durationSeconds,
requested durationSeconds), not the certificate's notAfter, so the session may outlive
the SVID; the scheduler refreshes at the SVID's rotation anyway.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import botocore.exceptions
from botocore.awsrequest import AWSRequest
from botocore.httpsession import URLLib3Session

from bridge.clouds.aws.config import RolesAnywhereHopConfig
from bridge.clouds.aws.material import AwsCredentials
from bridge.clouds.aws.x509_signer import X509SigV4Auth
from bridge.clouds.base import wrong_input
from bridge.errors import ExchangeError
from bridge.logs import bounded
from bridge.model import Material
from bridge.skew import ClockSkew, lifetime
from bridge.x509_svid import X509Svid

log = logging.getLogger(__name__)
SKEW_SERVICE = "aws_rolesanywhere"
MAX_RESPONSE = 64 * 1024  # a credential set is ~2 KiB; more is not Roles Anywhere

# What AWS says, by code; AccessDeniedException is told apart by its message.
# (retryable, reason, fetch a fresh SVID first)
_CODES: dict[str, tuple[bool, str, bool]] = {
    "ValidationException": (False, "invalid_request", False),
    "ResourceNotFoundException": (False, "not_found", False),
    "ThrottlingException": (True, "throttled", False),
    "TooManyRequestsException": (True, "throttled", False),
    "InternalServerException": (True, "unavailable", False),
    "ServiceUnavailableException": (True, "unavailable", False),
}
_DENIED: tuple[tuple[re.Pattern[str], tuple[bool, str, bool]], ...] = (
    (re.compile(r"signature (has )?expired|too skewed|in the future|request time",
                re.IGNORECASE), (True, "clock_skew", False)),
    (re.compile(r"untrusted|trust anchor|trust chain", re.IGNORECASE),
     (False, "untrusted_certificate", False)),
    (re.compile(r"expired|not yet valid|validity", re.IGNORECASE),
     (True, "certificate_expired", True)),
    (re.compile(r"signature", re.IGNORECASE), (True, "bad_signature", True)),
    (re.compile(r"profile", re.IGNORECASE), (False, "bad_profile", False)),
    (re.compile(r"roleSessionName", re.IGNORECASE), (False, "bad_session_name", False)),
)


class RolesAnywhereHop:
    """X.509-SVID -> temporary credentials for one IAM role, via Roles Anywhere."""

    name = "aws_roles_anywhere"

    def __init__(self, config: RolesAnywhereHopConfig, *, timeout: float,
                 skew: ClockSkew | None = None, now: Callable[[], float] = time.time,
                 http: Any = None) -> None:
        self._config = config
        self._timeout = timeout
        self._skew = skew
        self._now = now
        # urllib3 takes float timeouts; botocore's stubs say int.
        self._http = http or URLLib3Session(timeout=timeout,  # type: ignore[arg-type]
                                            max_pool_connections=16)
        self.scope = f"aws_rolesanywhere {config.endpoint or config.region}"
        self.judge = SKEW_SERVICE

    def request(self, svid: X509Svid, *, when: float) -> Any:
        """The signed, prepared CreateSession request (public for the benchmark)."""
        body: dict[str, object] = {
            "trustAnchorArn": self._config.trust_anchor_arn,
            "profileArn": self._config.profile_arn,
            "roleArn": self._config.role_arn,
            "durationSeconds": int(self._config.duration),
        }
        if self._config.session_name:
            body["roleSessionName"] = self._config.session_name
        request = AWSRequest(method="POST", url=self._config.url,
                             data=json.dumps(body).encode(),
                             headers={"Content-Type": "application/json"})
        X509SigV4Auth(svid, region=self._config.region, when=when).add_auth(request)
        return request.prepare()

    def exchange(self, material: Material) -> AwsCredentials:
        if not isinstance(material, X509Svid):
            raise wrong_input(self.name, material)
        sent = self._now()
        # Signed by the service's clock when it is known: a skewed host still signs
        # within AWS's 5-minute window.
        when = (self._skew.cloud_now(SKEW_SERVICE) if self._skew else None) or sent
        try:
            prepared = self.request(material, when=when)
        except ValueError as exc:  # a key Roles Anywhere cannot use (Ed25519, ...)
            raise ExchangeError(str(exc), hop=self.name, code="UnsupportedKey",
                                retryable=False, reason="config") from None
        try:
            response = self._http.send(prepared)
        except (botocore.exceptions.EndpointConnectionError,
                botocore.exceptions.ConnectionClosedError,
                botocore.exceptions.ReadTimeoutError,
                botocore.exceptions.ConnectTimeoutError) as exc:
            raise ExchangeError(f"cannot reach Roles Anywhere: {type(exc).__name__}",
                                hop=self.name, code="ConnectionError", retryable=True,
                                reason="unreachable") from None
        except botocore.exceptions.HTTPClientError as exc:
            raise ExchangeError(f"Roles Anywhere call failed: {type(exc).__name__}",
                                hop=self.name, code="ClientFailure", retryable=True,
                                reason="unavailable") from None
        received = self._now()
        date = response.headers.get("Date")
        if self._skew is not None:
            self._skew.observe(SKEW_SERVICE, date, sent, received)
        content = bytes(response.content[:MAX_RESPONSE + 1])
        if response.status_code not in (200, 201):
            raise _classify(response.status_code, response.headers, content, self.name)
        return self._credentials(content, date, sent)

    def _credentials(self, content: bytes, date: object, sent: float) -> AwsCredentials:
        try:
            document = json.loads(content) if len(content) <= MAX_RESPONSE else {}
            entry = document["credentialSet"][0]
            c = entry["credentials"]
            expiration = _timestamp(c["expiration"])
            credentials = AwsCredentials(
                access_key_id=str(c["accessKeyId"]),
                secret_access_key=str(c["secretAccessKey"]),
                session_token=str(c["sessionToken"]), expires_at=0.0,
                assumed_role_arn=str((entry.get("assumedRoleUser") or {}).get("arn", "")),
                region=self._config.region)
        except (ValueError, KeyError, IndexError, TypeError, AttributeError):
            # Hidden: a malformed answer may still hold the secret access key.
            raise ExchangeError("Roles Anywhere answered 201 without a usable credential "
                                "set", hop=self.name, code="MalformedResponse",
                                retryable=True, reason="malformed_response") from None
        # In this host's terms: what is left by AWS's own clock, from when we asked.
        left = lifetime(expiration, date, fallback_now=sent)
        return _with_expiry(credentials, sent + left)


def _with_expiry(c: AwsCredentials, expires_at: float) -> AwsCredentials:
    return AwsCredentials(access_key_id=c.access_key_id, secret_access_key=c.secret_access_key,
                          session_token=c.session_token, expires_at=expires_at,
                          assumed_role_arn=c.assumed_role_arn, region=c.region)


def _timestamp(value: object) -> float:
    """`expiration` as Roles Anywhere sends it: RFC 3339 (`...Z`, fractions allowed)."""
    if not isinstance(value, str):
        raise TypeError("expiration is not a string")
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    parsed = datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        raise ValueError("expiration without a time zone")
    return parsed.timestamp()


def error_code(headers: Any, content: bytes) -> tuple[str, str]:
    """(code, message) of a restJson error: `x-amzn-ErrorType` (up to its first `:`),
    else the body's `__type`/`code`; the message from `message`/`Message`."""
    code = str(headers.get("x-amzn-ErrorType") or "").split(":", 1)[0]
    message = ""
    try:
        body = json.loads(content[:MAX_RESPONSE])
    except ValueError:
        body = None
    if isinstance(body, dict):
        code = code or str(body.get("__type") or body.get("code") or "").split("#")[-1]
        message = str(body.get("message") or body.get("Message") or "")
    return code or "Unknown", message


def classify(code: str, message: str, status: int) -> tuple[bool, str, bool]:
    """(retryable, reason, fresh SVID first) for one refusal."""
    if code == "AccessDeniedException":
        return next((verdict for pattern, verdict in _DENIED if pattern.search(message)),
                    (False, "access_denied", False))
    if code in _CODES:
        return _CODES[code]
    if status >= 500 or status == 429:
        return True, "unavailable", False
    return False, "rejected", False


def _classify(status: int, headers: Any, content: bytes, hop: str) -> ExchangeError:
    code, message = error_code(headers, content)
    retryable, reason, fresh = classify(code, message, status)
    # Roles Anywhere's messages name ARNs and certificate fields, never key material.
    return ExchangeError(bounded(message) or f"HTTP {status}", hop=hop, code=code,
                         retryable=retryable, reason=reason, fresh_svid=fresh)
