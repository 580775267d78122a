"""The `gcp:` keys: STS token exchange into a workload identity pool, then (optionally)
`generateAccessToken` on `service_account` through `delegates`."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import ClassVar

from bridge.schema import Section, check_endpoint, clip

DEFAULT_SCOPE = "https://www.googleapis.com/auth/cloud-platform"
DEFAULT_STS = "https://sts.googleapis.com/v1/token"
# X.509 federation: the exchange runs over mTLS, on Google's mTLS endpoint.
MTLS_STS = "https://sts.mtls.googleapis.com/v1/token"
MTLS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:mtls"  # noqa: S105 - RFC 8693 name
DEFAULT_IAM = "https://iamcredentials.googleapis.com"
JWT_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:jwt"  # noqa: S105 - RFC 8693 name
_PROVIDER = re.compile(r"//iam\.googleapis\.com/projects/\d{1,20}/locations/global/"
                       r"workloadIdentityPools/[a-z0-9-]{4,32}/providers/[a-z0-9-]{4,32}",
                       re.ASCII)
# The same resource name with any segments, to say which one is wrong.
_PROVIDER_SHAPE = re.compile(r"//iam\.googleapis\.com/projects/(?P<project>[^/]*)/locations/"
                             r"(?P<location>[^/]*)/workloadIdentityPools/(?P<pool>[^/]*)/"
                             r"providers/(?P<provider>[^/]*)")
_POOL_ID = re.compile(r"[a-z0-9-]{4,32}", re.ASCII)
_PROVIDER_RULE = ("use //iam.googleapis.com/projects/<project NUMBER>/locations/global/"
                  "workloadIdentityPools/<pool>/providers/<provider>, where the pool and "
                  "provider IDs are 4-32 characters of a-z, 0-9 and -")
_SERVICE_ACCOUNT = re.compile(r"[a-z0-9][a-z0-9.-]{0,62}@[a-z0-9-]+(\.[a-z0-9-]+)*"
                              r"\.gserviceaccount\.com", re.ASCII)


@dataclass(frozen=True, slots=True)
class GcpHopConfig:
    """One GCP hop (see the module docstring)."""

    cloud: ClassVar[str] = "gcp"
    workload_identity_provider: str
    service_account: str | None = None
    delegates: tuple[str, ...] = ()
    scopes: tuple[str, ...] = (DEFAULT_SCOPE,)
    lifetime: float = 3600.0
    sts_endpoint: str = DEFAULT_STS
    iam_credentials_endpoint: str = DEFAULT_IAM
    external_account_file: bool = False

    @property
    def audience(self) -> str:
        """Without `allowedAudiences`, a pool's provider accepts tokens whose `aud` is
        its own resource name."""
        return self.workload_identity_provider


def read_hop(g: Section) -> GcpHopConfig | None:
    provider = g.get("workload_identity_provider", str, "", required=True,
                     check=_check_provider)
    service_account = g.get("service_account", str, "", check=check_service_account) or None
    delegates = g.strings("delegates")
    for i, d in enumerate(delegates):
        if message := check_service_account(d):
            g.problems.add(f"{g.key('delegates')}[{i}]", message)
    if delegates and not service_account:
        g.error("delegates", "delegates need a `service_account` to impersonate at the end")
    scopes = g.strings("scopes") if g.has("scopes") else [DEFAULT_SCOPE]
    if not scopes:
        g.error("scopes", "list at least one OAuth scope")
    for i, scope in enumerate(scopes):
        if not scope.startswith("https://"):
            g.problems.add(f"{g.key('scopes')}[{i}]", f"{clip(scope)} is not an OAuth "
                           "scope URL (https://www.googleapis.com/auth/...)")
    lifetime = g.duration("lifetime", 3600.0, minimum=600, maximum=43200)
    sts = g.get("sts_endpoint", str, DEFAULT_STS, check=check_endpoint)
    iam = g.get("iam_credentials_endpoint", str, DEFAULT_IAM, check=check_endpoint)
    external_file = g.get("external_account_file", bool, False)
    if not provider:
        return None
    return GcpHopConfig(workload_identity_provider=provider, service_account=service_account,
                        delegates=tuple(delegates), scopes=tuple(scopes), lifetime=lifetime,
                        sts_endpoint=sts, iam_credentials_endpoint=iam.rstrip("/"),
                        external_account_file=external_file)


def _check_provider(v: str) -> str | None:
    """The whole rule, and which part of the resource name breaks it when its shape is
    right (a long name clipped in the message would hide the part at fault)."""
    if _PROVIDER.fullmatch(v):
        return None
    shape = _PROVIDER_SHAPE.fullmatch(v)
    if shape is None:
        return f"{clip(v)} is not a workload identity provider: {_PROVIDER_RULE}"
    if not re.fullmatch(r"\d{1,20}", shape["project"], re.ASCII):
        wrong = f"the project must be the project NUMBER, got {clip(shape['project'])}"
    elif shape["location"] != "global":
        wrong = f"the location must be `global`, got {clip(shape['location'])}"
    elif not _POOL_ID.fullmatch(shape["pool"]):
        wrong = f"the pool ID {clip(shape['pool'])} breaks the rule"
    else:
        wrong = f"the provider ID {clip(shape['provider'])} breaks the rule"
    return f"not a workload identity provider: {wrong}; {_PROVIDER_RULE}"


def check_service_account(v: str) -> str | None:
    if _SERVICE_ACCOUNT.fullmatch(v):
        return None
    return f"{clip(v)} is not a service account email (name@project.iam.gserviceaccount.com)"
