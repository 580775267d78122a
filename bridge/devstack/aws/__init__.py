"""The AWS STS emulator (`AwsStsEmulator`) and the names tests use. DEVELOPMENT ONLY.

One module per concern: `emulator` (wire, routing, faults, recording), one per action
(`web_identity`, `assume_role`, `caller_identity`), `params` (request validation),
`authentication` + `sigv4` (signed requests), `roles` (providers, roles, trust),
`sessions` (issued credentials), `documents` (XML), `errors` (AWS's error codes).
"""

from __future__ import annotations

from bridge.devstack.aws.assume_role import CHAINED_MAX_DURATION
from bridge.devstack.aws.authentication import SIGNATURE_WINDOW
from bridge.devstack.aws.documents import STS_NAMESPACE
from bridge.devstack.aws.emulator import (
    ASSUME_ROLE,
    ASSUME_ROLE_WITH_WEB_IDENTITY,
    GET_CALLER_IDENTITY,
    STS_VERSION,
    AwsStsEmulator,
    RecordedRequest,
)
from bridge.devstack.aws.errors import StsError
from bridge.devstack.aws.params import DEFAULT_DURATION, MIN_DURATION
from bridge.devstack.aws.roles import (
    DEFAULT_MAX_SESSION_DURATION,
    MAX_DURATION,
    OidcProvider,
    TrustedRole,
)
from bridge.devstack.aws.sessions import IssuedCredentials
from bridge.devstack.aws.sigv4 import sigv4_signature

__all__ = [
    "ASSUME_ROLE",
    "ASSUME_ROLE_WITH_WEB_IDENTITY",
    "CHAINED_MAX_DURATION",
    "DEFAULT_DURATION",
    "DEFAULT_MAX_SESSION_DURATION",
    "GET_CALLER_IDENTITY",
    "MAX_DURATION",
    "MIN_DURATION",
    "SIGNATURE_WINDOW",
    "STS_NAMESPACE",
    "STS_VERSION",
    "AwsStsEmulator",
    "IssuedCredentials",
    "OidcProvider",
    "RecordedRequest",
    "StsError",
    "TrustedRole",
    "sigv4_signature",
]
