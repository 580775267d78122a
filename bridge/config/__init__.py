"""The config file: `load_config` turns the YAML contract of DESIGN.md into a typed
`Config` or a `ConfigError` listing every problem with its key path.

    loader   the file, the root sections, precedence with $SPIFFE_ENDPOINT_SOCKET
    schema   the typed model (`Config`, `TargetConfig`, ...)
    targets  `targets[]`: names, the cloud sections and `chain:`, the chain rules
    serving  `grpc`, `allowed_callers`, `serve`, `metadata.*` and their cross-rules

Each cloud's own keys are read by the cloud (`bridge.clouds.<cloud>.config`).
"""

from __future__ import annotations

from bridge.config.loader import file_warnings, load_config, parse_config
from bridge.config.schema import (
    DEFAULT_HTTP_ADDRESS,
    Config,
    OutputsConfig,
    RefreshConfig,
    TargetConfig,
    WorkloadApiConfig,
)
from bridge.config.serving import (
    DEFAULT_CALLER_AUDIENCE,
    DEFAULT_GRPC_SOCKET,
    GrpcConfig,
    MetadataConfig,
)

__all__ = [
    "DEFAULT_CALLER_AUDIENCE",
    "DEFAULT_GRPC_SOCKET",
    "DEFAULT_HTTP_ADDRESS",
    "Config",
    "GrpcConfig",
    "MetadataConfig",
    "OutputsConfig",
    "RefreshConfig",
    "TargetConfig",
    "WorkloadApiConfig",
    "file_warnings",
    "load_config",
    "parse_config",
]
