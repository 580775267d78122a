"""The Google STS + IAM Credentials emulator (`GcpEmulator`) and the names tests use.

DEVELOPMENT ONLY. One module per concern: `emulator` (wire, routing, recording), `sts`
(token exchange) with `oidc_subject` and `aws_replay` (the two kinds of subject token),
`iam` (generateAccessToken/generateIdToken), `google_issuer` (its ID tokens and JWKS),
`project` + `providers` + `service_accounts` (configuration), `tokens` (issued access
tokens), `replies` (Google's error replies).
"""

from __future__ import annotations

from bridge.devstack.gcp.aws_replay import AwsReplay, replay_signed_request
from bridge.devstack.gcp.emulator import (
    OP_TOKEN,
    STS_TOKEN_PATH,
    GcpEmulator,
    GoogleRecordedRequest,
)
from bridge.devstack.gcp.google_issuer import (
    GOOGLE_CERTS_PATH,
    GOOGLE_DISCOVERY_PATH,
    GOOGLE_ISSUER_PATH,
    ID_TOKEN_LIFETIME,
)
from bridge.devstack.gcp.iam import (
    CLOUD_PLATFORM_SCOPE,
    IAM_SCOPE,
    OP_GENERATE_ACCESS_TOKEN,
    OP_GENERATE_ID_TOKEN,
    UNAUTHENTICATED,
)
from bridge.devstack.gcp.oidc_subject import IAT_LEEWAY, MAX_ASSERTION_LIFETIME
from bridge.devstack.gcp.providers import (
    AttributeCondition,
    AwsWorkloadProvider,
    OidcWorkloadProvider,
    WorkloadProvider,
    federated_principal,
    pool_principal_set,
)
from bridge.devstack.gcp.service_accounts import (
    DEFAULT_LIFETIME,
    EXTENDED_MAX_LIFETIME,
    ServiceAccount,
)
from bridge.devstack.gcp.sts import (
    ACCESS_TOKEN_TYPE,
    AWS_TOKEN_TYPE,
    CONDITION_REJECTED,
    FEDERATED_TOKEN_LIFETIME,
    ID_TOKEN_TYPE,
    INVALID_TARGET,
    JWT_TOKEN_TYPE,
    MAX_SUBJECT_BYTES,
    SUBJECT_TOO_LONG,
    TOKEN_EXCHANGE_GRANT,
)
from bridge.devstack.gcp.tokens import GoogleToken

__all__ = [
    "ACCESS_TOKEN_TYPE",
    "AWS_TOKEN_TYPE",
    "CLOUD_PLATFORM_SCOPE",
    "CONDITION_REJECTED",
    "DEFAULT_LIFETIME",
    "EXTENDED_MAX_LIFETIME",
    "FEDERATED_TOKEN_LIFETIME",
    "GOOGLE_CERTS_PATH",
    "GOOGLE_DISCOVERY_PATH",
    "GOOGLE_ISSUER_PATH",
    "IAM_SCOPE",
    "IAT_LEEWAY",
    "ID_TOKEN_LIFETIME",
    "ID_TOKEN_TYPE",
    "INVALID_TARGET",
    "JWT_TOKEN_TYPE",
    "MAX_ASSERTION_LIFETIME",
    "MAX_SUBJECT_BYTES",
    "OP_GENERATE_ACCESS_TOKEN",
    "OP_GENERATE_ID_TOKEN",
    "OP_TOKEN",
    "STS_TOKEN_PATH",
    "SUBJECT_TOO_LONG",
    "TOKEN_EXCHANGE_GRANT",
    "UNAUTHENTICATED",
    "AttributeCondition",
    "AwsReplay",
    "AwsWorkloadProvider",
    "GcpEmulator",
    "GoogleRecordedRequest",
    "GoogleToken",
    "OidcWorkloadProvider",
    "ServiceAccount",
    "WorkloadProvider",
    "federated_principal",
    "pool_principal_set",
    "replay_signed_request",
]
