"""Cloud-metadata emulation: unmodified SDKs read the bridge's credentials through the
endpoints they already know (AWS container provider, EC2 IMDSv2, GCE metadata).

This package is the cloud-agnostic core: the loopback HTTP server every endpoint runs
on (`http`), the tokens that outlive a reload (`tokens`), and what endpoints are built
with (`MetadataContext`). The endpoints themselves belong to their clouds
(`bridge.clouds.<cloud>`); the daemon assembly builds one per configured section.
Endpoints only read the store (`valid_credential(now)`) and listen on loopback only.
"""

from __future__ import annotations

from dataclasses import dataclass

from bridge.clock import Clock
from bridge.logs import Redactor
from bridge.metrics import Metrics
from bridge.serving.metadata.endpoint import CloudEndpoint
from bridge.serving.metadata.http import LoopbackServer
from bridge.serving.metadata.messages import json_reply, text
from bridge.serving.metadata.tokens import LocalTokens, write_token_file
from bridge.store import CredentialStore


@dataclass(frozen=True, slots=True)
class MetadataContext:
    """The collaborators every endpoint is built with."""

    store: CredentialStore
    clock: Clock
    tokens: LocalTokens
    metrics: Metrics | None = None
    redactor: Redactor | None = None


__all__ = [
    "CloudEndpoint",
    "LocalTokens",
    "LoopbackServer",
    "MetadataContext",
    "json_reply",
    "text",
    "write_token_file",
]
