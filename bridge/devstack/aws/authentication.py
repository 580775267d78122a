"""Which emulator-issued session signed a request (AssumeRole, GetCallerIdentity).

DEVELOPMENT ONLY. The checks run in AWS's order, each with AWS's error:

1. an `Authorization: AWS4-HMAC-SHA256 ...` header   -> MissingAuthenticationToken 403 /
                                                        IncompleteSignature 400
2. the access key was issued here, and `x-amz-security-token` is its session token
                                                     -> InvalidClientTokenId 403
3. the session has not expired                       -> ExpiredToken 400
4. scope service `sts`, `x-amz-date` within 15 min of the emulator's clock, and the
   recomputed signature (see `sigv4`)                -> SignatureDoesNotMatch 403
"""

from __future__ import annotations

import hmac
from datetime import UTC, datetime

from bridge.devstack._http import HttpRequest
from bridge.devstack.aws.errors import StsError
from bridge.devstack.aws.sessions import IssuedCredentials, SessionStore
from bridge.devstack.aws.sigv4 import parse_authorization, sigv4_signature

SIGNATURE_WINDOW = 15 * 60  # how far x-amz-date may be from the emulator's clock
_AMZ_DATE = "%Y%m%dT%H%M%SZ"


def authenticate(request: HttpRequest, sessions: SessionStore, now: float) -> IssuedCredentials:
    """The session whose credentials signed this request (SigV4, header form).

    Raises:
        StsError: in the order given in the module docstring.
    """
    headers = {name.lower(): value for name, value in request.headers.items()}
    authorization = headers.get("authorization", "")
    if not authorization:
        raise StsError.of("MissingAuthenticationToken")
    parsed = parse_authorization(authorization)
    if parsed is None:
        raise StsError.of("IncompleteSignature")
    if "host" not in parsed.signed_headers:
        raise StsError.of("IncompleteSignature", "'Host' must be a signed header")
    session = sessions.get(parsed.access_key_id)
    presented_token = headers.get("x-amz-security-token", "")
    if session is None or not hmac.compare_digest(
        presented_token.encode(), session.session_token.encode()
    ):
        raise StsError.of("InvalidClientTokenId")
    if session.expiration.timestamp() <= now:
        raise StsError.of("ExpiredToken")
    if parsed.service != "sts":
        raise StsError.of(
            "SignatureDoesNotMatch", "Credential should be scoped to correct service: 'sts'."
        )
    amz_date = headers.get("x-amz-date", "")
    try:
        signed_at = datetime.strptime(amz_date, _AMZ_DATE).replace(tzinfo=UTC)
    except ValueError:
        raise StsError.of("IncompleteSignature", "Missing or malformed x-amz-date") from None
    if not amz_date.startswith(parsed.date_stamp):
        raise StsError.of("SignatureDoesNotMatch", "Date in Credential scope does not match")
    _check_signature_time(signed_at.timestamp(), now, amz_date)
    expected = sigv4_signature(
        session.secret_access_key,
        method=request.method,
        path=request.path,
        query=request.query,
        headers=headers,
        body=request.body,
        signed_headers=parsed.signed_headers,
        amz_date=amz_date,
        scope=parsed.scope,
    )
    if not hmac.compare_digest(expected, parsed.signature):
        raise StsError.of("SignatureDoesNotMatch")
    return session


def _check_signature_time(signed_at: float, now: float, amz_date: str) -> None:
    def stamp(epoch: float) -> str:
        return datetime.fromtimestamp(epoch, UTC).strftime(_AMZ_DATE)

    if signed_at < now - SIGNATURE_WINDOW:
        raise StsError.of(
            "SignatureDoesNotMatch",
            f"Signature expired: {amz_date} is now earlier than "
            f"{stamp(now - SIGNATURE_WINDOW)} ({stamp(now)} - 15 min.)",
        )
    if signed_at > now + SIGNATURE_WINDOW:
        raise StsError.of(
            "SignatureDoesNotMatch",
            f"Signature not yet current: {amz_date} is still later than "
            f"{stamp(now + SIGNATURE_WINDOW)} ({stamp(now)} + 15 min.)",
        )
