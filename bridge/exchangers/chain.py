"""Turn a target's configured hops into hop objects, in order.

What runs depends on what came before: an AWS hop is AssumeRoleWithWebIdentity first,
AssumeRole after AWS, and after GCP a Google ID token (generateIdToken) followed by
AssumeRoleWithWebIdentity. A GCP hop after AWS presents the AWS session as an
`aws4_request` subject token. Chained AWS hops without region or endpoint inherit the
previous AWS hop's.
"""

from __future__ import annotations

from dataclasses import replace

from bridge.config import AwsTarget, GcpTarget, TargetConfig
from bridge.config import Hop as HopConfig
from bridge.exchangers import Hop
from bridge.exchangers.aws_sts import AwsAssumeRoleHop, AwsWebIdentityHop
from bridge.skew import ClockSkew


def build_hops(target: TargetConfig, *, timeout: float,
               skew: ClockSkew | None = None) -> list[Hop]:
    if any(isinstance(h, GcpTarget) for h in target.hops):
        # Deferred: google-auth costs ~40 ms of start-up, for AWS-only configs nothing.
        from bridge.exchangers.gcp import GcpFederationHop, GcpIdTokenHop
    hops: list[Hop] = []
    prev: HopConfig | None = None
    last_aws: AwsTarget | None = None
    for configured in target.hops:
        cfg = configured
        if isinstance(cfg, AwsTarget):
            if last_aws is not None and not cfg.region and not cfg.sts_endpoint:
                cfg = replace(cfg, region=last_aws.region, sts_endpoint=last_aws.sts_endpoint)
            if isinstance(prev, AwsTarget):
                hops.append(AwsAssumeRoleHop(cfg, timeout=timeout, skew=skew))
            else:
                if isinstance(prev, GcpTarget):
                    hops.append(GcpIdTokenHop(prev, audience=cfg.audience, timeout=timeout,
                                              skew=skew))
                hops.append(AwsWebIdentityHop(cfg, timeout=timeout, skew=skew))
            last_aws = cfg
        else:
            hops.append(GcpFederationHop(
                cfg, timeout=timeout, skew=skew,
                aws_region=(last_aws.region or "us-east-1") if last_aws else "us-east-1"))
        prev = cfg
    return hops
