"""AWS STS AssumeRoleWithWebIdentity through boto3.

The call is unsigned (STS authenticates the JWT itself), so the client carries no AWS
credentials. botocore's own retries are off: the scheduler owns retries, with backoff
and a fresh JWT-SVID where STS says the token is the problem.
"""

from __future__ import annotations

import logging
from datetime import UTC
from typing import Any

import boto3
import botocore
import botocore.exceptions
from botocore.config import Config as BotoConfig

from bridge.config import AwsTarget
from bridge.errors import ExchangeError
from bridge.exchangers.session_name import session_name
from bridge.model import AwsCredentials, JwtSvid

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
    "ServiceUnavailable": (True, "unavailable", False),
    "InternalFailure": (True, "unavailable", False),
    "InternalError": (True, "unavailable", False),
    "AccessDenied": (False, "access_denied", False),
    "MalformedPolicyDocument": (False, "bad_policy", False),
    "PackedPolicyTooLarge": (False, "bad_policy", False),
    "RegionDisabledException": (False, "region_disabled", False),
    "ValidationError": (False, "invalid_request", False),
}


class AwsWebIdentityHop:
    """JWT-SVID -> temporary credentials for one IAM role."""

    name = "aws_web_identity"

    def __init__(self, target: AwsTarget, *, timeout: float) -> None:
        self._target = target
        self._client: Any = boto3.session.Session().client(
            "sts",
            region_name=target.region,
            endpoint_url=target.sts_endpoint,
            config=BotoConfig(
                signature_version=botocore.UNSIGNED,
                retries={"total_max_attempts": 1, "mode": "standard"},
                connect_timeout=timeout,
                read_timeout=timeout,
                user_agent_extra="spiffe-bridge",
            ),
        )

    def exchange(self, svid: JwtSvid) -> AwsCredentials:
        name = self._target.session_name or session_name(svid.spiffe_id)
        try:
            out = self._client.assume_role_with_web_identity(
                RoleArn=self._target.role_arn,
                RoleSessionName=name,
                WebIdentityToken=svid.token,
                DurationSeconds=int(self._target.duration),
            )
        except botocore.exceptions.ClientError as exc:
            raise _classify_client_error(exc, self.name) from None
        except (botocore.exceptions.EndpointConnectionError,
                botocore.exceptions.ConnectionClosedError,
                botocore.exceptions.ReadTimeoutError,
                botocore.exceptions.ConnectTimeoutError) as exc:
            raise ExchangeError(f"cannot reach STS: {type(exc).__name__}", hop=self.name,
                                code="ConnectionError", retryable=True,
                                reason="unreachable") from None
        except botocore.exceptions.BotoCoreError as exc:
            raise ExchangeError(f"STS call failed: {type(exc).__name__}", hop=self.name,
                                code="ClientFailure", retryable=True,
                                reason="unavailable") from None
        c = out["Credentials"]
        expiration = c["Expiration"].astimezone(UTC).timestamp()
        role = out.get("AssumedRoleUser", {}).get("Arn", "")
        return AwsCredentials(
            access_key_id=c["AccessKeyId"],
            secret_access_key=c["SecretAccessKey"],
            session_token=c["SessionToken"],
            expires_at=expiration,
            assumed_role_arn=role,
        )


def _classify_client_error(exc: botocore.exceptions.ClientError, hop: str) -> ExchangeError:
    error = exc.response.get("Error", {})
    code = str(error.get("Code", "Unknown"))
    status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    # STS messages name the role, audience or issuer; they carry no token material.
    message = " ".join(str(error.get("Message", "")).split())[:300]
    if code in _CODES:
        retryable, reason, fresh = _CODES[code]
    elif status >= 500 or status == 429:
        retryable, reason, fresh = True, "unavailable", False
    else:
        retryable, reason, fresh = False, "rejected", False
    return ExchangeError(message or f"HTTP {status}", hop=hop, code=code, retryable=retryable,
                         reason=reason, fresh_svid=fresh)
