"""GCP as the engine sees it: the `Cloud` behind every GCP hop and target.

Chain rules (its share): a GCP hop after AWS presents the AWS session as an
`aws4_request` subject token; after GCP it would be a delegation, which is written as
`delegates` of one hop instead; after any other cloud it takes an ID token minted for
its provider. A GCP hop mints an ID token for a next hop (`generateIdToken`) only as a
service account, so it needs `service_account`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from bridge.clouds.base import Endpoint, Hop, HopConfig, HopContext, Link, LinkProblem, Target
from bridge.clouds.gcp import files
from bridge.clouds.gcp.config import DEFAULT_STS, MTLS_STS, GcpHopConfig, read_hop
from bridge.clouds.gcp.gce import GceEndpoint
from bridge.clouds.gcp.material import GcpToken
from bridge.model import Credential
from bridge.outputs.files import SharedFile, TargetFile
from bridge.schema import Section

if TYPE_CHECKING:
    from bridge.clouds.gcp.federation import DatedPool

# google-auth treats a token as stale 3 min 45 s before its expiry (REFRESH_THRESHOLD).
MIN_REMAINING = 3 * 60.0 + 45.0
PROTO_CLOUD_GCP = 2  # spiffebridge.v1.CLOUD_GCP


class GcpCloud:
    """GCP behind the `Cloud` protocol (see the module docstring for its chain rules)."""

    name = "gcp"
    title = "GCP"
    proto_cloud = PROTO_CLOUD_GCP
    proto_field = "gcp"  # Credential.gcp: spiffebridge.v1.GcpAccessToken
    material_type: type = GcpToken
    min_remaining = MIN_REMAINING
    endpoints: tuple[Endpoint, ...] = (GceEndpoint(),)
    output_kinds: tuple[str, ...] = (files.TOKEN_OUTPUT, files.JSON_OUTPUT,
                                     files.EXTERNAL_ACCOUNT_OUTPUT)

    def read_section(self, section: Section) -> list[HopConfig | None]:
        return [read_hop(section)]

    def read_hop(self, section: Section) -> HopConfig | None:
        return read_hop(section)

    def source_problem(self, hop: HopConfig, source: str) -> str | None:
        return None  # a JWT-SVID (OIDC provider) or an X.509-SVID (X.509 provider, mTLS)

    def link(self, prev: HopConfig | None, hop: HopConfig) -> Link | LinkProblem:
        if prev is None:
            return Link.SVID
        if prev.cloud == "aws":
            return Link.NATIVE
        if prev.cloud == self.name:
            return LinkProblem("GCP after GCP is a delegation; list the service accounts "
                               "in `delegates` of the GCP hop instead")
        return Link.TOKEN

    def mint_problem(self, hop: HopConfig) -> str | None:
        assert isinstance(hop, GcpHopConfig)
        if hop.service_account:
            return None
        return ("needs a Google ID token, so the GCP hop before it must set "
                "`service_account`")

    def hop_problems(self, hop: HopConfig, *, position: int,
                     jwt_file: bool) -> list[tuple[str, str]]:
        assert isinstance(hop, GcpHopConfig)
        if hop.external_account_file and (position != 0 or not jwt_file):
            return [("gcp.external_account_file", "needs `jwt_file: true` and the GCP hop "
                     "first: the SDK then exchanges the JWT-SVID file itself")]
        return []

    def session(self, context: HopContext) -> GcpSession:
        return GcpSession(context)

    def files(self, target: Target, directory: Path) -> list[TargetFile]:
        first = target.hops[0]
        return files.target_files(target.name, first if isinstance(first, GcpHopConfig)
                                  else None, directory)

    def shared_files(self, targets: Sequence[Target]) -> list[SharedFile]:
        return []

    def recover(self, directory: Path, target: Target, *, now: float,
                mono: float) -> Credential | None:
        return files.recover(directory, target.name, now=now, mono=mono)



class GcpSession:
    """GCP hops for one daemon generation, sharing one urllib3 pool."""

    def __init__(self, context: HopContext) -> None:
        self._context = context
        self._http: DatedPool | None = None

    def build(self, hop: HopConfig, *, link: Link,
              earlier: Sequence[HopConfig]) -> list[Hop]:
        # Deferred: google-auth costs ~40 ms of start-up, for AWS-only configs nothing.
        from bridge.clouds.gcp.federation import GcpFederationHop

        assert isinstance(hop, GcpHopConfig)
        if link is Link.X509 and hop.sts_endpoint == DEFAULT_STS:
            hop = replace(hop, sts_endpoint=MTLS_STS)
        return [GcpFederationHop(hop, http=self._pool())]

    def mint(self, hop: HopConfig, *, audience: str) -> list[Hop]:
        from bridge.clouds.gcp.id_token import GcpIdTokenHop

        assert isinstance(hop, GcpHopConfig)
        return [GcpIdTokenHop(hop, audience=audience, http=self._pool())]

    def _pool(self) -> DatedPool:
        from bridge.clouds.gcp.federation import pool

        if self._http is None:
            self._http = pool(self._context.timeout, self._context.skew, self._context.now)
        return self._http
