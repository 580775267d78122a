"""The `azure:` keys: Entra ID's client-credentials grant with the JWT-SVID (or an ID
token minted by the hop before) as a federated `client_assertion`.

`scopes` names one resource (`<resource>/.default`: the grant takes no other form);
`authority_host` moves the authority (sovereign clouds, the dev stack). With
`federated_token_file` the target's `jwt/<t>.jwt` is kept for azure-identity's
`AZURE_FEDERATED_TOKEN_FILE`, which is re-read only every 600 s: it is rewritten so its
token always has `FEDERATED_FILE_MIN` left, which needs an SVID TTL (`svid_ttl`, what
the SPIRE entry gives) of at least `MIN_SVID_TTL`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import ClassVar

from bridge.schema import Section, check_audience, check_endpoint, clip

DEFAULT_AUDIENCE = "api://AzureADTokenExchange"
DEFAULT_AUTHORITY = "https://login.microsoftonline.com"
READER_CACHE = 600.0  # azure-identity's WorkloadIdentityCredential re-reads the file so often
FILE_MARGIN = 120.0   # ... plus one slow refresh and clock jitter
FEDERATED_FILE_MIN = READER_CACHE + FILE_MARGIN
# The agent hands out a cached SVID until about half its lifetime is left (-10 %
# jitter), and the file is rewritten one LEAD (60 s) before the floor: the TTL must
# leave FEDERATED_FILE_MIN + 60 s in 45 % of it.
MIN_SVID_TTL = 1800.0
SPIRE_DEFAULT_TTL = 300.0
_GUID = re.compile(r"[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}", re.ASCII)
_TENANT_DOMAIN = re.compile(r"([a-zA-Z0-9-]{1,63}\.)+[a-zA-Z]{2,63}", re.ASCII)
_SCOPE = re.compile(r"(https://[^\s/]+(/[^\s]*)?|api://[^\s]+)/\.default", re.ASCII)


@dataclass(frozen=True, slots=True)
class AzureHopConfig:
    """One Entra hop (see the module docstring)."""

    cloud: ClassVar[str] = "azure"
    tenant_id: str
    client_id: str
    scope: str
    authority_host: str = DEFAULT_AUTHORITY
    federated_token_file: bool = False
    svid_ttl: float = SPIRE_DEFAULT_TTL
    audience: str = DEFAULT_AUDIENCE

    @property
    def authority(self) -> str:
        return f"{self.authority_host}/{self.tenant_id}"

    @property
    def resource(self) -> str:
        return self.scope.removesuffix("/.default")


def read_hop(z: Section, *, first: bool = True) -> AzureHopConfig | None:
    tenant = z.get("tenant_id", str, "", required=True, check=_check_tenant)
    client = z.get("client_id", str, "", required=True, check=_check_client)
    scopes = z.strings("scopes")
    if not z.has("scopes"):
        z.error("scopes", "required: one resource's scope, e.g. "
                "[https://storage.azure.com/.default]")
    elif len(scopes) != 1:
        z.error("scopes", f"list exactly one scope (one resource per token), got {len(scopes)}")
    for i, scope in enumerate(scopes):
        if not _SCOPE.fullmatch(scope):
            z.problems.add(f"{z.key('scopes')}[{i}]", f"{clip(scope)} is not a resource's "
                           "`/.default` scope (the client-credentials grant takes only that "
                           "form, e.g. https://storage.azure.com/.default)")
    host = z.get("authority_host", str, DEFAULT_AUTHORITY, check=_check_authority)
    file = z.get("federated_token_file", bool, False)
    ttl = z.duration("svid_ttl", SPIRE_DEFAULT_TTL, minimum=60, maximum=7 * 86400)
    audience = z.get("audience", str, DEFAULT_AUDIENCE, check=check_audience) if not first \
        else DEFAULT_AUDIENCE
    if not tenant or not client or len(scopes) != 1 or not _SCOPE.fullmatch(scopes[0]):
        return None
    return AzureHopConfig(tenant_id=tenant, client_id=client, scope=scopes[0],
                          authority_host=host.rstrip("/"), federated_token_file=file,
                          svid_ttl=ttl, audience=audience)


def _check_tenant(v: str) -> str | None:
    if _GUID.fullmatch(v) or (_TENANT_DOMAIN.fullmatch(v) and len(v) <= 253):
        return None
    return f"{clip(v)} is not a tenant ID (a GUID, or a domain such as contoso.onmicrosoft.com)"


def _check_client(v: str) -> str | None:
    if _GUID.fullmatch(v):
        return None
    return f"{clip(v)} is not an application (client) ID: a GUID"


def _check_authority(v: str) -> str | None:
    if problem := check_endpoint(v):
        return problem
    if not v.startswith("https://"):
        # msal, the Entra client, refuses anything else (the dev stack serves https too).
        return f"{clip(v)} must be an https:// URL: Entra's client speaks only https"
    if v.rstrip("/").count("/") > 2:
        return f"{clip(v)} must be a host without a path (the tenant is added to it)"
    return None
