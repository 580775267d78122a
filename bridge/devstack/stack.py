"""The embedded local stack: agent, issuer, AWS STS and Google wired together. DEVELOPMENT ONLY.

`DevStack` is what `spiffe-bridge dev` and the integration tests start: one signing
authority shared by a fake Workload API (unix socket inside `workdir`), an OIDC
discovery endpoint that is also the tokens' issuer, an AWS STS emulator and a Google
STS + IAM Credentials emulator that both trust that issuer. Everything listens on
loopback or in `workdir`; nothing here is used by the daemon's `run`.

Pre-registered in the AWS STS emulator (`aws`, `aws_sts_url`):

- OIDC provider = the SPIFFE issuer, client ID `sts.amazonaws.com`; role
  `arn:aws:iam::111122223333:role/demo` (DEMO_ROLE_ARN) trusting
  `aud = sts.amazonaws.com`, `sub = spiffe://<trust domain>/*`, for up to 12 hours;
- OIDC provider = the Google ID-token issuer (`google_issuer`, `<gcp url>/google`),
  client ID `sts.amazonaws.com`; role `arn:aws:iam::111122223333:role/from-gcp`
  (FROM_GCP_ROLE_ARN) trusting `aud = sts.amazonaws.com` and `sub` = the demo service
  account's unique ID 112233445566778899001 (DEMO_SERVICE_ACCOUNT_ID): GCP->AWS;
- role `arn:aws:iam::444455556666:role/tenant` (TENANT_ROLE_ARN), AssumeRole only,
  trusting sessions of the `demo` and `from-gcp` roles, up to 1 hour: AWS->AWS chains.

Pre-registered in the Google emulator (`gcp`, `gcp_sts_url`, `gcp_iam_url`):

- OIDC provider GCP_PROVIDER =
  `//iam.googleapis.com/projects/123456/locations/global/workloadIdentityPools/spire/providers/spire`,
  issuer = the SPIFFE issuer, allowed audience = that resource name, condition
  `sub` matches `spiffe://<trust domain>/*`;
- AWS provider GCP_AWS_PROVIDER =
  `//iam.googleapis.com/projects/123456/locations/global/workloadIdentityPools/from-aws/providers/aws-demo`
  for account 111122223333, verified against `aws_sts_url`, condition `arn` matches
  `arn:aws:sts::111122223333:assumed-role/*`: AWS->GCP;
- service account `demo@dev-project.iam.gserviceaccount.com` (DEMO_SERVICE_ACCOUNT),
  unique ID 112233445566778899001, max lifetime 1 hour, with workloadIdentityUser for
  every identity of both pools (`principalSet://.../workloadIdentityPools/{spire,from-aws}/*`).

SVIDs for GCP must carry `aud = GCP_PROVIDER`; for AWS `aud = sts.amazonaws.com`.

With `x509=True` the agent also serves X.509-SVIDs from a dev CA (`x509`, which
`x509.rotate()` rotates; `workload.rotate_x509_svids()` re-issues), and the AWS
emulator's Roles Anywhere has a trust anchor holding that CA (kept up to date on
rotation: `trust_anchor_arn`), a profile (`profile_arn`) listing role
`arn:aws:iam::111122223333:role/x509-demo` (X509_ROLE_ARN), whose trust policy allows
`aws:PrincipalTag/x509SAN/URI` like `spiffe://<trust domain>/*`, up to 12 hours; the
tenant role trusts its sessions too. Google gets an mTLS token endpoint
(`gcp_mtls`, `gcp_mtls_sts_url`) with X.509 provider GCP_X509_PROVIDER (pool `spire`,
so the demo service account admits it) trusting the same CA, condition
`spiffe://<trust domain>/*` on the SAN URI; clients trust its server certificate
through `SSL_CERT_FILE=<workdir>/gcp-mtls-ca.pem` (`gcp_mtls_ca_file`).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from bridge.devstack._lifecycle import StartStop
from bridge.devstack.authority import JwtAuthority
from bridge.devstack.aws import AwsStsEmulator
from bridge.devstack.gcp import GcpEmulator, pool_principal_set
from bridge.devstack.gcp.x509_sts import GcpMtlsSts
from bridge.devstack.oidc import OidcDiscoveryServer
from bridge.devstack.workload_api import DEFAULT_SVID_TTL, Identity, WorkloadApiServer
from bridge.devstack.x509_authority import X509Authority

AWS_AUDIENCE = "sts.amazonaws.com"
DEMO_ROLE_ARN = "arn:aws:iam::111122223333:role/demo"
DEMO_ROLE_MAX_SESSION = 12 * 3600
FROM_GCP_ROLE_ARN = "arn:aws:iam::111122223333:role/from-gcp"
TENANT_ROLE_ARN = "arn:aws:iam::444455556666:role/tenant"
DEMO_AWS_ACCOUNT = "111122223333"
GCP_PROVIDER = (
    "//iam.googleapis.com/projects/123456/locations/global/workloadIdentityPools/spire/"
    "providers/spire"
)
GCP_AWS_PROVIDER = (
    "//iam.googleapis.com/projects/123456/locations/global/workloadIdentityPools/from-aws/"
    "providers/aws-demo"
)
DEMO_SERVICE_ACCOUNT = "demo@dev-project.iam.gserviceaccount.com"
DEMO_SERVICE_ACCOUNT_ID = "112233445566778899001"
GOOGLE_ID_TOKEN_AUDIENCE = AWS_AUDIENCE
SOCKET_NAME = "agent.sock"
X509_ROLE_ARN = "arn:aws:iam::111122223333:role/x509-demo"
GCP_X509_PROVIDER = (
    "//iam.googleapis.com/projects/123456/locations/global/workloadIdentityPools/spire/"
    "providers/x509"
)
MTLS_CA_FILE = "gcp-mtls-ca.pem"


class DevStack(StartStop):
    """Owns and wires the emulators; `start()`/`stop()` or use as a context manager."""

    def __init__(
        self,
        workdir: Path,
        *,
        trust_domain: str = "example.org",
        identities: Iterable[Identity | str] | None = None,
        svid_ttl: int = DEFAULT_SVID_TTL,
        x509: bool = False,
    ) -> None:
        """Build (but do not start) the stack; the agent socket is `workdir/agent.sock`.

        `identities` defaults to the single `spiffe://<trust_domain>/demo`.

        Raises:
            ValueError: the socket path exceeds the AF_UNIX limit (pick a shorter
                `workdir`, e.g. under /tmp), or an identity is outside `trust_domain`.
        """
        self._workdir = Path(workdir).absolute()
        self.authority = JwtAuthority(trust_domain)
        self.x509 = X509Authority(trust_domain, intermediate=True) if x509 else None
        self.trust_anchor_arn = ""
        self.profile_arn = ""
        if self.x509 is not None:  # the anchor follows a CA rotation before new SVIDs go out
            self.x509.subscribe(self._follow_ca)
        self.oidc = OidcDiscoveryServer(self.authority.jwks)
        self.workload = WorkloadApiServer(
            self.authority,
            self._workdir / SOCKET_NAME,
            identities=(f"spiffe://{trust_domain}/demo",) if identities is None else identities,
            svid_ttl=svid_ttl,
            x509=self.x509,
        )
        self.aws = AwsStsEmulator()
        self.gcp = GcpEmulator()
        self.gcp_mtls = GcpMtlsSts(self.gcp.token_store) if x509 else None
        self._started = False

    @property
    def trust_domain(self) -> str:
        """The trust domain name, e.g. `example.org`."""
        return self.authority.trust_domain

    @property
    def workdir(self) -> Path:
        """The directory holding the agent socket."""
        return self._workdir

    @property
    def workload_socket_path(self) -> Path:
        """The agent's unix socket."""
        return self.workload.socket_path

    @property
    def workload_socket_uri(self) -> str:
        """`unix:///…/agent.sock`, usable as SPIFFE_ENDPOINT_SOCKET."""
        return self.workload.uri

    @property
    def issuer(self) -> str:
        """The JWT issuer URL (`iss`), also the OIDC discovery base URL."""
        return self.oidc.issuer

    @property
    def aws_sts_url(self) -> str:
        """The STS emulator's endpoint URL."""
        return self.aws.url

    @property
    def gcp_sts_url(self) -> str:
        """Google STS token endpoint (`.../v1/token`), google-auth's `token_url`."""
        return self.gcp.sts_url

    @property
    def gcp_iam_url(self) -> str:
        """IAM Credentials base URL; append `/v1/projects/-/serviceAccounts/...`."""
        return self.gcp.url

    @property
    def google_issuer(self) -> str:
        """`iss` of the Google emulator's ID tokens (trusted by the AWS emulator)."""
        return self.gcp.google_issuer

    def start(self) -> DevStack:
        """Start every emulator and pre-register the demo providers, roles and accounts.

        On failure, whatever was started is stopped again before the error propagates.
        """
        if self._started:
            raise RuntimeError("dev stack already started")
        self._workdir.mkdir(parents=True, exist_ok=True)
        try:
            self.oidc.start()
            self.authority.set_issuer(self.oidc.issuer)
            self.aws.start()
            self.aws.register_oidc_provider(self.issuer, [AWS_AUDIENCE])
            self.aws.add_role(
                DEMO_ROLE_ARN,
                provider_url=self.issuer,
                aud=AWS_AUDIENCE,
                sub=f"spiffe://{self.trust_domain}/*",
                max_session_duration=DEMO_ROLE_MAX_SESSION,
            )
            self.gcp.start()
            self._register_cross_cloud_demo()
            self._register_roles_anywhere()
            self.workload.start()
        except BaseException:
            self._stop_all()
            raise
        self._started = True
        return self

    def stop(self) -> None:
        """Stop every emulator (idempotent)."""
        self._stop_all()
        self._started = False

    def rotate_keys(self) -> str:
        """Rotate the signing key; returns the new `kid` (old keys stay published)."""
        return self.authority.rotate().kid

    def _register_cross_cloud_demo(self) -> None:
        """The GCP side of the demo, and the AWS roles GCP->AWS and AWS->AWS chains use."""
        self.gcp.add_oidc_provider(
            GCP_PROVIDER,
            issuer_uri=self.issuer,
            allowed_audiences=[GCP_PROVIDER],
            attribute_condition=f"spiffe://{self.trust_domain}/*",
        )
        self.gcp.add_aws_provider(
            GCP_AWS_PROVIDER,
            account_id=DEMO_AWS_ACCOUNT,
            sts_url=self.aws.url,
            attribute_condition=f"arn:aws:sts::{DEMO_AWS_ACCOUNT}:assumed-role/*",
        )
        self.gcp.add_service_account(
            DEMO_SERVICE_ACCOUNT,
            unique_id=DEMO_SERVICE_ACCOUNT_ID,
            workload_identity_users=[
                pool_principal_set(GCP_PROVIDER),
                pool_principal_set(GCP_AWS_PROVIDER),
            ],
        )
        self.aws.register_oidc_provider(self.google_issuer, [GOOGLE_ID_TOKEN_AUDIENCE])
        self.aws.add_role(
            FROM_GCP_ROLE_ARN,
            provider_url=self.google_issuer,
            aud=GOOGLE_ID_TOKEN_AUDIENCE,
            sub=DEMO_SERVICE_ACCOUNT_ID,
        )
        self.aws.add_role(TENANT_ROLE_ARN,
                          trusted_principals=[DEMO_ROLE_ARN, FROM_GCP_ROLE_ARN, X509_ROLE_ARN])

    def _register_roles_anywhere(self) -> None:
        """The trust anchor (the dev X.509 CA, followed across rotations), profile, role."""
        authority = self.x509
        if authority is None:
            return
        if self.gcp_mtls is not None:
            self.gcp_mtls.add_x509_provider(GCP_X509_PROVIDER, authority.roots,
                                            attribute_condition=f"spiffe://{self.trust_domain}/*")
            self.gcp_mtls.start()
            self.gcp_mtls_ca_file.write_bytes(self.gcp_mtls.server_ca_pem)
        ra = self.aws.roles_anywhere
        self.trust_anchor_arn = ra.add_trust_anchor(authority.roots)
        ra.add_role(X509_ROLE_ARN, san_uri=f"spiffe://{self.trust_domain}/*",
                    max_session_duration=DEMO_ROLE_MAX_SESSION)
        self.profile_arn = ra.add_profile([X509_ROLE_ARN], duration_seconds=43200)

    @property
    def gcp_mtls_sts_url(self) -> str:
        """The mTLS token endpoint (`x509=True` only)."""
        if self.gcp_mtls is None:
            raise RuntimeError("the dev stack was built without x509")
        return self.gcp_mtls.url

    @property
    def gcp_mtls_ca_file(self) -> Path:
        """The PEM of the mTLS endpoint's server CA, for SSL_CERT_FILE."""
        return self._workdir / MTLS_CA_FILE

    def _follow_ca(self) -> None:
        if self.x509 is not None and self.trust_anchor_arn:
            self.aws.roles_anywhere.add_trust_anchor(self.x509.roots, arn=self.trust_anchor_arn)
        if self.x509 is not None and self.gcp_mtls is not None:
            self.gcp_mtls.set_trust_store(GCP_X509_PROVIDER, self.x509.roots)

    def _stop_all(self) -> None:
        self.workload.stop()
        if self.gcp_mtls is not None:
            self.gcp_mtls.stop()
        self.gcp.stop()
        self.aws.stop()
        self.oidc.stop()
