"""GCP: STS federation, impersonation and ID-token hops, `gcp/` files and the GCE
metadata endpoint, behind the `Cloud` protocol (`GCP`)."""

from __future__ import annotations

from bridge.clouds.gcp.cloud import MIN_REMAINING, GcpCloud
from bridge.clouds.gcp.config import DEFAULT_IAM, DEFAULT_SCOPE, DEFAULT_STS, GcpHopConfig
from bridge.clouds.gcp.material import GcpToken

GCP = GcpCloud()

__all__ = ["DEFAULT_IAM", "DEFAULT_SCOPE", "DEFAULT_STS", "GCP", "MIN_REMAINING",
           "GcpCloud", "GcpHopConfig", "GcpToken"]
