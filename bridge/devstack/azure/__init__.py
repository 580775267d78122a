"""The Entra ID emulator (`EntraEmulator`) and the names tests use. DEVELOPMENT ONLY.

One module per concern: `emulator` (wire, routing, recording), `grant` (the
client-credentials grant and its checks), `directory` (tenants, apps, federated
credentials, resources), `tokens` (Entra-shaped access tokens), `replies` (AADSTS
error bodies).
"""

from __future__ import annotations

from bridge.devstack.azure.directory import (
    EXCHANGE_AUDIENCE,
    MAX_FEDERATED_CREDENTIALS,
    Directory,
    FederatedCredential,
    Resource,
)
from bridge.devstack.azure.emulator import OP_TOKEN, EntraEmulator, EntraRecordedRequest, fetcher
from bridge.devstack.azure.grant import JWT_BEARER, LEEWAY
from bridge.devstack.azure.tokens import MAX_LIFETIME, MIN_LIFETIME, EntraToken, v1_issuer

__all__ = [
    "EXCHANGE_AUDIENCE",
    "JWT_BEARER",
    "LEEWAY",
    "MAX_FEDERATED_CREDENTIALS",
    "MAX_LIFETIME",
    "MIN_LIFETIME",
    "OP_TOKEN",
    "Directory",
    "EntraEmulator",
    "EntraRecordedRequest",
    "EntraToken",
    "FederatedCredential",
    "Resource",
    "fetcher",
    "v1_issuer",
]
