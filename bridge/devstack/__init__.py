"""Local stand-ins for SPIRE, an OIDC issuer and AWS STS. DEVELOPMENT ONLY.

Used by `spiffe-bridge dev` and the tests, never by the daemon's `run`. Each piece
speaks the real wire protocol on loopback or a unix socket, validates like the real
service, and has fault switches for reliability tests:

- `JwtAuthority` (authority.py): ES256 keys, SPIRE-shaped JWT-SVIDs, JWKS, rotation;
- `WorkloadApiServer` (workload_api.py): the SPIFFE Workload API, JWT profile;
- `OidcDiscoveryServer` (oidc.py): `/.well-known/openid-configuration` and `/keys`;
- `AwsStsEmulator` (aws/): STS web identity, AssumeRole, GetCallerIdentity; query protocol + XML;
- `FaultSwitches` and friends (faults.py): queued failures, latency, bad SVIDs;
- `DevStack` (stack.py): all of the above wired together.
"""

from __future__ import annotations

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
    FaultSwitches,
    GrpcFailure,
    HttpFailure,
    WorkloadFaults,
)
from bridge.devstack.oidc import OidcDiscoveryServer
from bridge.devstack.stack import AWS_AUDIENCE, DEMO_ROLE_ARN, DevStack
from bridge.devstack.workload_api import Identity, WorkloadApiServer

__all__ = [
    "ANY_OPERATION",
    "AWS_AUDIENCE",
    "DEMO_ROLE_ARN",
    "AwsStsEmulator",
    "DevStack",
    "FaultSwitches",
    "GrpcFailure",
    "HttpFailure",
    "Identity",
    "IssuedCredentials",
    "JwtAuthority",
    "OidcDiscoveryServer",
    "OidcProvider",
    "RecordedRequest",
    "SigningKey",
    "TrustedRole",
    "WorkloadApiServer",
    "WorkloadFaults",
]
