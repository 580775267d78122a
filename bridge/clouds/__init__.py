"""The clouds, each one package behind the `Cloud` protocol (`base`), and the registry
the engine finds them in: by a hop's `cloud` name, never by its type.

Adding a cloud is a package here with its config, hops, files, gRPC material and
metadata endpoints, one line in `CLOUDS`, its message in the proto, and its dev-stack
emulator.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from bridge.clouds.aws import AWS
from bridge.clouds.base import (
    DEFAULT_QUOTA_RATE,
    Cloud,
    CloudSession,
    Endpoint,
    Hop,
    HopConfig,
    HopContext,
    Link,
    LinkProblem,
    Quota,
    Target,
    quota_of,
    wrong_input,
)
from bridge.clouds.gcp import GCP

CLOUDS: Mapping[str, Cloud] = MappingProxyType({c.name: c for c in (AWS, GCP)})


def cloud_of(hop: HopConfig) -> Cloud:
    """The cloud that reads and runs `hop`."""
    return CLOUDS[hop.cloud]


def endpoints() -> Mapping[str, tuple[Cloud, Endpoint]]:
    """Every metadata endpoint by its config key, with the cloud that brings it."""
    return {e.key: (c, e) for c in CLOUDS.values() for e in c.endpoints}


__all__ = [
    "AWS",
    "CLOUDS",
    "DEFAULT_QUOTA_RATE",
    "GCP",
    "Cloud",
    "CloudSession",
    "Endpoint",
    "Hop",
    "HopConfig",
    "HopContext",
    "Link",
    "LinkProblem",
    "Quota",
    "Target",
    "cloud_of",
    "endpoints",
    "quota_of",
    "wrong_input",
]
