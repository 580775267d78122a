"""Local stand-ins for SPIRE, an OIDC issuer, AWS STS and Google. DEVELOPMENT ONLY.

Used by `spiffe-bridge dev` and the tests, never by the daemon's `run`. Each piece
speaks the real wire protocol on loopback or a unix socket, validates like the real
service, and has fault switches for reliability tests:

- `JwtAuthority` (authority.py): ES256 keys, SPIRE-shaped JWT-SVIDs, JWKS, rotation;
- `WorkloadApiServer` (workload_api.py): the SPIFFE Workload API, JWT profile;
- `OidcDiscoveryServer` (oidc.py): `/.well-known/openid-configuration` and `/keys`;
- `AwsStsEmulator` (aws/): STS web identity, AssumeRole, GetCallerIdentity; query protocol + XML;
- `GcpEmulator` (gcp/): Google STS token exchange, IAM Credentials, Google ID tokens;
- `FaultSwitches` and friends (faults.py): queued failures, latency, bad SVIDs;
- `DevStack` (stack.py): all of the above wired together, with the demo account's names.

Shared by the emulators: `_http.py` (loopback server, `HttpRequest`/`HttpResponse`),
`_emulator.py` (lifecycle and request recording), `jwks.py` (issuers' keys, signature
checks, `fetch_json`), `globs.py` (IAM StringLike). Each cloud's own names (constants,
value types) are in `bridge.devstack.aws` and `bridge.devstack.gcp`.
"""

from __future__ import annotations

from bridge.devstack._http import HttpRequest, HttpResponse
from bridge.devstack.authority import JwtAuthority, SigningKey
from bridge.devstack.aws import (
    AwsStsEmulator,
    IssuedCredentials,
    OidcProvider,
    RecordedRequest,
    TrustedRole,
)
from bridge.devstack.faults import (
    ANY_OPERATION,
    ECHO_TOKEN,
    FaultSwitches,
    GrpcFailure,
    HttpFailure,
    SvidEntry,
    WorkloadFaults,
)
from bridge.devstack.gcp import GcpEmulator
from bridge.devstack.oidc import KEYS_PATH, OidcDiscoveryServer
from bridge.devstack.stack import (
    AWS_AUDIENCE,
    DEMO_AWS_ACCOUNT,
    DEMO_ROLE_ARN,
    DEMO_ROLE_MAX_SESSION,
    DEMO_SERVICE_ACCOUNT,
    DEMO_SERVICE_ACCOUNT_ID,
    FROM_GCP_ROLE_ARN,
    GCP_AWS_PROVIDER,
    GCP_PROVIDER,
    GCP_X509_PROVIDER,
    GOOGLE_ID_TOKEN_AUDIENCE,
    TENANT_ROLE_ARN,
    X509_ROLE_ARN,
    DevStack,
)
from bridge.devstack.workload_api import (
    FETCH_JWT_BUNDLES,
    FETCH_JWT_SVID,
    Identity,
    WorkloadApiServer,
)
from bridge.devstack.x509_authority import X509Authority

__all__ = [
    "ANY_OPERATION",
    "AWS_AUDIENCE",
    "DEMO_AWS_ACCOUNT",
    "DEMO_ROLE_ARN",
    "DEMO_ROLE_MAX_SESSION",
    "DEMO_SERVICE_ACCOUNT",
    "DEMO_SERVICE_ACCOUNT_ID",
    "ECHO_TOKEN",
    "FETCH_JWT_BUNDLES",
    "FETCH_JWT_SVID",
    "FROM_GCP_ROLE_ARN",
    "GCP_AWS_PROVIDER",
    "GCP_PROVIDER",
    "GCP_X509_PROVIDER",
    "GOOGLE_ID_TOKEN_AUDIENCE",
    "KEYS_PATH",
    "TENANT_ROLE_ARN",
    "X509_ROLE_ARN",
    "AwsStsEmulator",
    "DevStack",
    "FaultSwitches",
    "GcpEmulator",
    "GrpcFailure",
    "HttpFailure",
    "HttpRequest",
    "HttpResponse",
    "Identity",
    "IssuedCredentials",
    "JwtAuthority",
    "OidcDiscoveryServer",
    "OidcProvider",
    "RecordedRequest",
    "SigningKey",
    "SvidEntry",
    "TrustedRole",
    "WorkloadApiServer",
    "WorkloadFaults",
    "X509Authority",
]
