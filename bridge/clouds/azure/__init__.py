"""Azure: the Entra ID hop (a federated client assertion), `azure/` files and the
federated token file, behind the `Cloud` protocol (`AZURE`)."""

from __future__ import annotations

from bridge.clouds.azure.cloud import MIN_REMAINING, AzureCloud
from bridge.clouds.azure.config import (
    DEFAULT_AUDIENCE,
    DEFAULT_AUTHORITY,
    FEDERATED_FILE_MIN,
    MIN_SVID_TTL,
    AzureHopConfig,
)
from bridge.clouds.azure.material import AzureToken

AZURE = AzureCloud()

__all__ = ["AZURE", "DEFAULT_AUDIENCE", "DEFAULT_AUTHORITY", "FEDERATED_FILE_MIN",
           "MIN_REMAINING", "MIN_SVID_TTL", "AzureCloud", "AzureHopConfig", "AzureToken"]
