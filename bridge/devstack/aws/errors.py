"""STS's error replies: AWS's codes, their HTTP statuses and messages. DEVELOPMENT ONLY.

Every check in the emulator raises `StsError`; the wire layer turns it into an
`<ErrorResponse>`. A fault switch may name only a code: `KNOWN_ERRORS` then gives the
status and text AWS would send.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from bridge.devstack.faults import HttpFailure

NOT_AUTHORIZED = "Not authorized to perform sts:AssumeRoleWithWebIdentity"
CHAINED_DURATION_EXCEEDED = (
    "The requested DurationSeconds exceeds the 1 hour session limit for roles assumed by "
    "role chaining."
)
MAX_SESSION_EXCEEDED = (
    "The requested DurationSeconds exceeds the MaxSessionDuration set for this role."
)
SIGNATURE_MISMATCH = (
    "The request signature we calculated does not match the signature you provided. "
    "Check your AWS Secret Access Key and signing method. Consult the service "
    "documentation for details."
)
IDP_UNREACHABLE = (
    "Couldn't retrieve verification key from your identity provider,  please reference "
    "AssumeRoleWithWebIdentity documentation for requirements"
)

KNOWN_ERRORS: Mapping[str, tuple[int, str]] = MappingProxyType({
    "AccessDenied": (403, NOT_AUTHORIZED),
    "ExpiredToken": (400, "The security token included in the request is expired"),
    "ExpiredTokenException": (400, "Token expired"),
    "IDPCommunicationError": (400, IDP_UNREACHABLE),
    "IDPRejectedClaim": (403, "The identity provider rejected the claim"),
    "IncompleteSignature": (
        400,
        "Authorization header requires 'Credential', 'SignedHeaders' and 'Signature' parameters",
    ),
    "InternalFailure": (500, "An internal error occurred"),
    "InvalidAction": (400, "Could not find operation for version 2011-06-15"),
    "InvalidClientTokenId": (403, "The security token included in the request is invalid."),
    "InvalidIdentityToken": (400, "The web identity token is not valid"),
    "MalformedPolicyDocument": (400, "The policy is not in the valid JSON format"),
    "MissingAuthenticationToken": (403, "Request is missing Authentication Token"),
    "RegionDisabledException": (403, "STS is not activated in this region"),
    "ServiceUnavailable": (503, "Service is unavailable, please try again later"),
    "SignatureDoesNotMatch": (403, SIGNATURE_MISMATCH),
    "Throttling": (400, "Rate exceeded"),
    "ValidationError": (400, "1 validation error detected"),
})
"""Default HTTP status and message per error code."""


class StsError(Exception):
    """An STS error reply: HTTP status, AWS error code and message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.status = status
        self.code = code
        self.message = message

    @classmethod
    def of(cls, code: str, message: str | None = None) -> StsError:
        """An error with the code's usual status (400 if unknown) and message."""
        status, default = KNOWN_ERRORS.get(code, (400, code))
        return cls(status, code, message or default)

    @classmethod
    def from_failure(cls, failure: HttpFailure) -> StsError:
        """A fault switch's failure; an unset status or message is the code's usual one."""
        default_status, default_message = KNOWN_ERRORS.get(failure.code, (0, ""))
        return cls(
            failure.status or default_status or 400,
            failure.code,
            failure.message or default_message or failure.code,
        )
