"""The bridge's gRPC API (`spiffebridge.v1.CredentialService`): the server on its own
thread and loop, the servicer that reads the store, caller authorization by JWT-SVID
(`callers`), store change signals for watchers (`changes`), and the store-to-message
conversion (`convert`, each cloud filling in its own material)."""

from __future__ import annotations

from bridge.serving.grpc.callers import CallerRejected, CallerVerifier, allows, bearer
from bridge.serving.grpc.convert import ServedTarget
from bridge.serving.grpc.server import GrpcService, GrpcSettings

__all__ = ["CallerRejected", "CallerVerifier", "GrpcService", "GrpcSettings", "ServedTarget",
           "allows", "bearer"]
