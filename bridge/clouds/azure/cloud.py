"""Azure as the engine sees it: the `Cloud` behind every Entra hop and target.

Chain rules (its share): an Entra hop is fed a token: the JWT-SVID first, after any
other cloud an ID token the hop before mints for its `audience` (a Google ID token, an
AWS web identity token). Azure after Azure has nothing to add (one app's token is not a
federated assertion for another). Out of Azure, the next hop is fed the Entra token
itself, which Entra issues for one resource (`scopes`): so that hop's `audience` must
be that resource (an app ID URI the AWS OIDC provider or GCP pool trusts).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from bridge.clouds.azure import files
from bridge.clouds.azure.config import (
    FEDERATED_FILE_MIN,
    MIN_SVID_TTL,
    AzureHopConfig,
    read_hop,
)
from bridge.clouds.azure.managed_identity import AppServiceEndpoint, ImdsEndpoint
from bridge.clouds.azure.material import AzureToken
from bridge.clouds.base import Endpoint, Hop, HopConfig, HopContext, Link, LinkProblem, Target
from bridge.model import Credential
from bridge.outputs.files import SharedFile, TargetFile
from bridge.schema import Section

if TYPE_CHECKING:
    from bridge.clouds.azure.entra import EntraHttp

# azure-identity refreshes a token 5 min before its expiry (its `refresh_on` default);
# what we hand out has more, and the managed-identity endpoints' 60-90 min tokens allow it.
MIN_REMAINING = 5 * 60.0 + 30.0
PROTO_CLOUD_AZURE = 3  # spiffebridge.v1.CLOUD_AZURE


class AzureCloud:
    """Azure behind the `Cloud` protocol (see the module docstring for its chain rules)."""

    name = "azure"
    title = "Azure"
    proto_cloud = PROTO_CLOUD_AZURE
    proto_field = "azure"  # Credential.azure: spiffebridge.v1.AzureAccessToken
    material_type: type = AzureToken
    min_remaining = MIN_REMAINING
    endpoints: tuple[Endpoint, ...] = (AppServiceEndpoint(), ImdsEndpoint())
    output_kinds: tuple[str, ...] = (files.TOKEN_OUTPUT, files.JSON_OUTPUT)

    def read_section(self, section: Section) -> list[HopConfig | None]:
        return [read_hop(section, first=True)]

    def read_hop(self, section: Section) -> HopConfig | None:
        return read_hop(section, first=False)

    def link(self, prev: HopConfig | None, hop: HopConfig) -> Link | LinkProblem:
        if prev is None:
            return Link.SVID
        if prev.cloud == self.name:
            return LinkProblem("Azure after Azure: an Entra access token is no federated "
                               "assertion for another app; give each its own target")
        return Link.TOKEN

    def mint_problem(self, hop: HopConfig, *, audience: str = "") -> str | None:
        assert isinstance(hop, AzureHopConfig)
        if audience.rstrip("/") == hop.resource:
            return None
        return (f"is fed the Entra token itself, which is for {hop.resource}: set that "
                "hop's `audience` to it (the app ID URI its trust names), or the Azure "
                f"hop's `scopes` to [{audience}/.default]")

    def hop_problems(self, hop: HopConfig, *, position: int,
                     jwt_file: bool) -> list[tuple[str, str]]:
        assert isinstance(hop, AzureHopConfig)
        problems: list[tuple[str, str]] = []
        if hop.federated_token_file and (position != 0 or not jwt_file):
            problems.append(("azure.federated_token_file", "needs `jwt_file: true` and the "
                             "Azure hop first: the file is the target's jwt/<name>.jwt"))
        if hop.federated_token_file and hop.svid_ttl < MIN_SVID_TTL:
            problems.append(("azure.svid_ttl", _short_ttl(hop.svid_ttl)))
        return problems

    def jwt_file_min_remaining(self, hop: HopConfig) -> float:
        """What the target's JWT file must keep when this hop is first."""
        assert isinstance(hop, AzureHopConfig)
        return FEDERATED_FILE_MIN if hop.federated_token_file else 0.0

    def session(self, context: HopContext) -> AzureSession:
        return AzureSession(context)

    def files(self, target: Target, directory: Path) -> list[TargetFile]:
        return files.target_files(target.name)

    def shared_files(self, targets: Sequence[Target]) -> list[SharedFile]:
        return []

    def recover(self, directory: Path, target: Target, *, now: float,
                mono: float) -> Credential | None:
        return files.recover(directory, target.name, now=now, mono=mono)


def _short_ttl(ttl: float) -> str:
    raise_it = ("spire-server entry update -entryID <id> -jwtSVIDTTL "
                f"{MIN_SVID_TTL:.0f}")
    return (f"is {ttl:.0f}s, but azure-identity re-reads AZURE_FEDERATED_TOKEN_FILE only "
            f"every 600s, so the file's token must always keep {FEDERATED_FILE_MIN:.0f}s, "
            "and the agent hands out an SVID until half its lifetime: a TTL of at least "
            f"{MIN_SVID_TTL:.0f}s is needed. Raise the entry's JWT-SVID TTL in SPIRE "
            f"(`{raise_it}`, or the server's default_jwt_svid_ttl) and set svid_ttl to it")


class AzureSession:
    """Entra hops for one daemon generation, sharing one HTTP session."""

    def __init__(self, context: HopContext) -> None:
        self._context = context
        self._http: EntraHttp | None = None

    def build(self, hop: HopConfig, *, link: Link,
              earlier: Sequence[HopConfig]) -> list[Hop]:
        from bridge.clouds.azure.entra import EntraHop  # msal and requests: ~60 ms

        assert isinstance(hop, AzureHopConfig)
        return [EntraHop(hop, http=self._client(), now=self._context.now)]

    def mint(self, hop: HopConfig, *, audience: str) -> list[Hop]:
        from bridge.clouds.azure.entra import EntraIdToken

        assert isinstance(hop, AzureHopConfig)
        return [EntraIdToken(hop)]

    def _client(self) -> EntraHttp:
        from bridge.clouds.azure.entra import EntraHttp

        if self._http is None:
            self._http = EntraHttp(timeout=self._context.timeout, skew=self._context.skew,
                                   now=self._context.now)
        return self._http
