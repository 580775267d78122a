"""AWS as the engine sees it: the `Cloud` behind every AWS hop and target.

Chain rules (its share): an AWS hop after another AWS hop is AssumeRole, signed with
that session, and AWS caps such sessions at 1 h; after any other cloud it is
AssumeRoleWithWebIdentity, fed an ID token the hop before mints for its audience. An
AWS session cannot mint an ID token for a next hop (yet).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from bridge.clouds.aws import files
from bridge.clouds.aws.config import (
    CHAINED_MAX_DURATION,
    AwsHopConfig,
    RolesAnywhereHopConfig,
    read_hop,
    read_section,
)
from bridge.clouds.aws.container import ContainerEndpoint
from bridge.clouds.aws.imds import ImdsEndpoint
from bridge.clouds.aws.material import AwsCredentials
from bridge.clouds.base import Endpoint, Hop, HopConfig, HopContext, Link, LinkProblem, Target
from bridge.model import Credential
from bridge.outputs.files import SharedFile, TargetFile
from bridge.schema import Section

if TYPE_CHECKING:
    from bridge.clouds.aws.sts import StsClients

# botocore refreshes in the background with 15 min left and blocks at 10 min: what we
# hand out always has more, or every SDK call would re-fetch.
MIN_REMAINING = 15 * 60.0
PROTO_CLOUD_AWS = 1  # spiffebridge.v1.CLOUD_AWS


class AwsCloud:
    """AWS behind the `Cloud` protocol (see the module docstring for its chain rules)."""

    name = "aws"
    title = "AWS"
    proto_cloud = PROTO_CLOUD_AWS
    proto_field = "aws"  # Credential.aws: spiffebridge.v1.AwsCredentials
    material_type: type = AwsCredentials
    min_remaining = MIN_REMAINING
    endpoints: tuple[Endpoint, ...] = (ContainerEndpoint(), ImdsEndpoint())
    output_kinds: tuple[str, ...] = (files.CREDENTIALS_OUTPUT, files.PROCESS_OUTPUT)

    def read_section(self, section: Section) -> list[HopConfig | None]:
        return list(read_section(section))

    def read_hop(self, section: Section) -> HopConfig | None:
        return read_hop(section)

    def source_problem(self, hop: HopConfig, source: str) -> str | None:
        roles_anywhere = isinstance(hop, RolesAnywhereHopConfig)
        if roles_anywhere and source != "x509":
            return ("a Roles Anywhere hop (trust_anchor_arn) signs with an X.509-SVID: set "
                    "the target's `source: x509`")
        if not roles_anywhere and source == "x509":
            return ("AssumeRoleWithWebIdentity takes a JWT-SVID; with `source: x509` the AWS "
                    "hop is Roles Anywhere (set trust_anchor_arn and profile_arn)")
        return None

    def link(self, prev: HopConfig | None, hop: HopConfig) -> Link | LinkProblem:
        if isinstance(hop, RolesAnywhereHopConfig) and prev is not None:
            return LinkProblem("Roles Anywhere is only ever the first hop (it is signed "
                               "with the X.509-SVID)")
        if prev is None:
            return Link.SVID
        if isinstance(prev, AwsHopConfig):
            if isinstance(hop, AwsHopConfig) and hop.duration > CHAINED_MAX_DURATION:
                return LinkProblem("role chaining limits sessions to 1h (AWS refuses more "
                                   "for roles assumed with role-session credentials)",
                                   key="duration")
            return Link.NATIVE
        return Link.TOKEN

    def mint_problem(self, hop: HopConfig) -> str | None:
        return "needs an ID token, which an AWS session cannot mint"

    def hop_problems(self, hop: HopConfig, *, position: int,
                     jwt_file: bool) -> list[tuple[str, str]]:
        return []

    def session(self, context: HopContext) -> AwsSession:
        return AwsSession(context)

    def files(self, target: Target, directory: Path) -> list[TargetFile]:
        return files.target_files(target.name)

    def shared_files(self, targets: Sequence[Target]) -> list[SharedFile]:
        return [files.credentials_file([t.name for t in targets])] if targets else []

    def recover(self, directory: Path, target: Target, *, now: float,
                mono: float) -> Credential | None:
        return files.recover(directory, target.name, now=now, mono=mono)



class AwsSession:
    """AWS hops for one daemon generation, sharing one set of STS clients."""

    def __init__(self, context: HopContext) -> None:
        self._context = context
        self._clients: StsClients | None = None

    def build(self, hop: HopConfig, *, link: Link,
              earlier: Sequence[HopConfig]) -> list[Hop]:
        from bridge.clouds.aws.quota import account_of
        from bridge.clouds.aws.sts import AwsAssumeRoleHop, AwsWebIdentityHop  # botocore

        assert isinstance(hop, AwsHopConfig)
        if link is Link.X509:
            from bridge.clouds.aws.roles_anywhere import RolesAnywhereHop

            assert isinstance(hop, RolesAnywhereHopConfig)
            return [RolesAnywhereHop(hop, timeout=self._context.timeout,
                                     skew=self._context.skew, now=self._context.now)]
        last_aws = next((h for h in reversed(earlier) if isinstance(h, AwsHopConfig)), None)
        if last_aws is not None and not hop.region and not hop.sts_endpoint:
            hop = replace(hop, region=last_aws.region, sts_endpoint=last_aws.sts_endpoint)
        clients = self._sts_clients()
        skew = self._context.skew
        now = self._context.now
        if link is Link.NATIVE:
            caller = account_of(last_aws.role_arn) if last_aws is not None else None
            return [AwsAssumeRoleHop(hop, clients=clients, skew=skew, now=now,
                                     caller_account=caller)]
        return [AwsWebIdentityHop(hop, clients=clients, skew=skew, now=now)]

    def mint(self, hop: HopConfig, *, audience: str) -> list[Hop]:
        raise ValueError(AwsCloud().mint_problem(hop))

    def _sts_clients(self) -> StsClients:
        from bridge.clouds.aws.sts import StsClients

        if self._clients is None:
            self._clients = StsClients(timeout=self._context.timeout)
        return self._clients
