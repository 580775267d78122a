"""AWS STS AssumeRoleWithWebIdentity (and AssumeRole for chains) through botocore.

The call is unsigned (STS authenticates the JWT itself), so the client carries no AWS
credentials. botocore's own retries are off: the scheduler owns retries, with backoff
and a fresh JWT-SVID where STS says the token is the problem.

One botocore session serves a daemon generation (`StsClients`), and targets with the
same region and endpoint share one unsigned client: a client costs ~7 MB and ~90 ms
when each has its own session, which made 1,000 targets take minutes and gigabytes to
wire up. The session resolves endpoints without botocore's 7 MB `endpoints.json`
(`endpoints.slim`). boto3 is not imported: on top of botocore it adds 20-40 ms of start-up
(s3transfer and the resource layer) for nothing the bridge uses.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from datetime import UTC
from typing import Any

import botocore
import botocore.exceptions
import botocore.session
from botocore.config import Config as BotoConfig

from bridge.clouds.aws.config import AwsHopConfig
from bridge.clouds.aws.endpoints import slim
from bridge.clouds.aws.material import AwsCredentials
from bridge.clouds.aws.quota import account_of, sts_quota
from bridge.clouds.aws.session_name import session_name
from bridge.clouds.base import wrong_input
from bridge.errors import ExchangeError, retry_after
from bridge.logs import bounded
from bridge.model import IdToken, JwtSvid, Material
from bridge.skew import ClockSkew, lifetime

log = logging.getLogger(__name__)

# PROTOCOLS.md §4. (retryable, reason, fetch a fresh SVID first)
_CODES: dict[str, tuple[bool, str, bool]] = {
    "IDPCommunicationError": (True, "idp_unreachable", False),
    "InvalidIdentityToken": (True, "invalid_token", True),
    "ExpiredTokenException": (True, "token_expired", True),
    "ExpiredToken": (True, "token_expired", True),
    "IDPRejectedClaim": (True, "claim_rejected", True),
    "Throttling": (True, "throttled", False),
    "ThrottlingException": (True, "throttled", False),
    "RequestLimitExceeded": (True, "throttled", False),
    "TooManyRequestsException": (True, "throttled", False),
    "ServiceUnavailable": (True, "unavailable", False),
    "InternalFailure": (True, "unavailable", False),
    "InternalError": (True, "unavailable", False),
    "AccessDenied": (False, "access_denied", False),
    "MalformedPolicyDocument": (False, "bad_policy", False),
    "PackedPolicyTooLarge": (False, "bad_policy", False),
    "RegionDisabledException": (False, "region_disabled", False),
    "ValidationError": (False, "invalid_request", False),
}


# A request signed at a time STS refuses: the signature is fine, the clock is not.
_CLOCK_CODES = frozenset({"RequestExpired", "RequestTimeTooSkewed"})
_SIGNATURE_CODES = frozenset({"SignatureDoesNotMatch", "InvalidSignatureException"})
_CLOCK_WORDS = re.compile(r"expired|not yet current|too skewed|is now earlier|is now later",
                          re.IGNORECASE)

# Idle keep-alive connections kept per STS endpoint: refresh.concurrency's maximum, so
# concurrent refreshes sharing a client never churn connections (a pool only grows to
# what is in use at once).
_MAX_POOL = 1024


SKEW_SERVICE = "aws_sts"  # the clock_skew_seconds{service} of STS answers


def sts_scope(target: AwsHopConfig) -> str:
    """The STS endpoint a hop calls (its concurrency scope)."""
    return f"aws_sts {target.sts_endpoint or target.region or 'us-east-1'}"


class StsClients:
    """botocore STS clients for one daemon generation, with our deadlines and botocore's
    retries off. One botocore session serves them all (its loader parses the STS model
    once); unsigned clients are shared per (region, endpoint): botocore clients are
    thread-safe, sessions are not."""

    def __init__(self, *, timeout: float) -> None:
        self._timeout = timeout
        self._lock = threading.Lock()
        self._session: Any = None
        self._unsigned: dict[tuple[str, str | None], Any] = {}

    def client(self, target: AwsHopConfig, *, signed_with: AwsCredentials | None) -> Any:
        region = target.region or "us-east-1"
        key = (region, target.sts_endpoint)
        with self._lock:
            if signed_with is None and key in self._unsigned:
                return self._unsigned[key]
            if self._session is None:
                self._session = slim(botocore.session.get_session())  # no endpoints.json
            config = BotoConfig(retries={"total_max_attempts": 1, "mode": "standard"},
                                connect_timeout=self._timeout, read_timeout=self._timeout,
                                max_pool_connections=_MAX_POOL,
                                user_agent_extra="spiffe-bridge",
                                signature_version=None if signed_with else botocore.UNSIGNED)
            client = self._session.create_client(
                "sts", region_name=region, endpoint_url=target.sts_endpoint, config=config,
                aws_access_key_id=signed_with.access_key_id if signed_with else None,
                aws_secret_access_key=signed_with.secret_access_key if signed_with else None,
                aws_session_token=signed_with.session_token if signed_with else None)
            if signed_with is None:
                self._unsigned[key] = client
            return client


def _call(hop: str, skew: ClockSkew | None, now: Callable[[], float], call: Any, region: str,
          **params: Any) -> AwsCredentials:
    """Run one STS call; translate botocore's errors into classified ExchangeErrors."""
    sent = now()
    try:
        out = call(**params)
    except botocore.exceptions.ClientError as exc:
        _observe(skew, exc.response, sent, now())  # a skewed clock often shows up as an error
        # Hidden: STS error messages may echo the request (the web identity token).
        raise _classify_client_error(exc, hop) from None
    except (botocore.exceptions.EndpointConnectionError,
            botocore.exceptions.ConnectionClosedError,
            botocore.exceptions.ReadTimeoutError,
            botocore.exceptions.ConnectTimeoutError) as exc:
        raise ExchangeError(f"cannot reach STS: {type(exc).__name__}", hop=hop,
                            code="ConnectionError", retryable=True,
                            reason="unreachable") from exc
    except botocore.exceptions.BotoCoreError as exc:
        raise ExchangeError(f"STS call failed: {type(exc).__name__}", hop=hop,
                            code="ClientFailure", retryable=True,
                            # Hidden: parameter errors quote the value (the token).
                            reason="unavailable") from None
    _observe(skew, out, sent, now())
    c = out["Credentials"]
    date = out.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("date")
    # In this host's terms: what is left by STS's own clock, from when we asked.
    left = lifetime(c["Expiration"].astimezone(UTC).timestamp(), date, fallback_now=sent)
    return AwsCredentials(
        access_key_id=c["AccessKeyId"], secret_access_key=c["SecretAccessKey"],
        session_token=c["SessionToken"], expires_at=sent + left,
        assumed_role_arn=out.get("AssumedRoleUser", {}).get("Arn", ""), region=region)


def _observe(skew: ClockSkew | None, response: Any, sent: float, received: float) -> None:
    if skew is not None:
        headers = response.get("ResponseMetadata", {}).get("HTTPHeaders", {})
        skew.observe(SKEW_SERVICE, headers.get("date"), sent, received)


class AwsWebIdentityHop:
    """JWT-SVID (or an ID token) -> temporary credentials for one IAM role.

    The call is unsigned: STS authenticates the token itself.
    """

    name = "aws_web_identity"

    def __init__(self, target: AwsHopConfig, *, clients: StsClients,
                 skew: ClockSkew | None = None, now: Callable[[], float] = time.time) -> None:
        self._target = target
        self._skew = skew
        self._now = now
        self._client = clients.client(target, signed_with=None)
        self.scope = sts_scope(target)
        # Unsigned: the role's account answers (and throttles) the call.
        self.quota = sts_quota(account=account_of(target.role_arn), region=target.region)
        self.judge = SKEW_SERVICE

    def exchange(self, material: Material) -> AwsCredentials:
        if isinstance(material, JwtSvid):
            token, subject = material.token, material.spiffe_id
        elif isinstance(material, IdToken):
            token, subject = material.token, material.subject
        else:
            raise wrong_input(self.name, material)
        return _call(self.name, self._skew, self._now, self._client.assume_role_with_web_identity,
                     self._target.region or "us-east-1",
                     RoleArn=self._target.role_arn,
                     RoleSessionName=self._target.session_name or session_name(subject),
                     WebIdentityToken=token, DurationSeconds=int(self._target.duration))


class AwsAssumeRoleHop:
    """AWS session -> another role's session (AWS->AWS chains, e.g. into a tenant account).

    Signed with the previous hop's credentials; AWS caps chained sessions at 1 h.
    """

    name = "aws_assume_role"

    def __init__(self, target: AwsHopConfig, *, clients: StsClients,
                 skew: ClockSkew | None = None, now: Callable[[], float] = time.time,
                 caller_account: str | None = None) -> None:
        self._target = target
        self._clients = clients
        self._skew = skew
        self._now = now
        self.scope = sts_scope(target)
        # Signed: the call counts against the signing session's account.
        self.quota = sts_quota(account=caller_account or account_of(target.role_arn),
                               region=target.region)
        self.judge = SKEW_SERVICE

    def exchange(self, material: Material) -> AwsCredentials:
        if not isinstance(material, AwsCredentials):
            raise wrong_input(self.name, material)
        client = self._clients.client(self._target, signed_with=material)
        params: dict[str, Any] = {
            "RoleArn": self._target.role_arn,
            "RoleSessionName": self._target.session_name or session_name(
                material.assumed_role_arn or "spiffe-bridge"),
            "DurationSeconds": int(self._target.duration)}
        if self._target.external_id:
            params["ExternalId"] = self._target.external_id
        return _call(self.name, self._skew, self._now, client.assume_role,
                     self._target.region or "us-east-1", **params)


def _classify_client_error(exc: botocore.exceptions.ClientError, hop: str) -> ExchangeError:
    error = exc.response.get("Error", {})
    code = str(error.get("Code", "Unknown"))
    status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    # STS messages name the role, audience or issuer; they carry no token material.
    message = bounded(str(error.get("Message", "")))
    if code in _CLOCK_CODES or (code in _SIGNATURE_CODES and _CLOCK_WORDS.search(message)):
        # The request was signed by a wrong clock: retry once the skew is measured (this
        # answer's Date feeds it); not a config error. The operator is told to fix NTP.
        retryable, reason, fresh = True, "clock_skew", False
    elif code in _CODES:
        retryable, reason, fresh = _CODES[code]
    elif status == 429:
        retryable, reason, fresh = True, "throttled", False
    elif status >= 500:
        retryable, reason, fresh = True, "unavailable", False
    else:
        retryable, reason, fresh = False, "rejected", False
    headers = exc.response.get("ResponseMetadata", {}).get("HTTPHeaders", {})
    return ExchangeError(message or f"HTTP {status}", hop=hop, code=code, retryable=retryable,
                         reason=reason, fresh_svid=fresh,
                         retry_after=retry_after(headers.get("retry-after")))
