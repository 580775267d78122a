"""AWS: STS web identity and AssumeRole hops, `aws/` files, the container endpoint and
IMDSv2, behind the `Cloud` protocol (`AWS`)."""

from __future__ import annotations

from bridge.clouds.aws.cloud import MIN_REMAINING, AwsCloud
from bridge.clouds.aws.config import DEFAULT_AUDIENCE, AwsHopConfig
from bridge.clouds.aws.material import AwsCredentials

AWS = AwsCloud()

__all__ = ["AWS", "DEFAULT_AUDIENCE", "MIN_REMAINING", "AwsCloud", "AwsCredentials",
           "AwsHopConfig"]
