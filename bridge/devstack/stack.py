"""The embedded local stack: agent, issuer and AWS STS wired together. DEVELOPMENT ONLY.

`DevStack` is what `spiffe-bridge dev` and the integration tests start: one signing
authority shared by a fake Workload API (unix socket inside `workdir`), an OIDC
discovery endpoint that is also the tokens' issuer, and an AWS STS emulator that
trusts that issuer. Everything listens on loopback or in `workdir`; nothing here is
used by the daemon's `run`.

Pre-registered in the STS emulator: the issuer as an OIDC provider with client ID
`sts.amazonaws.com`, and role `arn:aws:iam::111122223333:role/demo` trusting
`aud = sts.amazonaws.com` and `sub = spiffe://<trust domain>/*`, for up to 12 hours.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from types import TracebackType

from bridge.devstack.authority import JwtAuthority
from bridge.devstack.aws_sts import AwsStsEmulator
from bridge.devstack.oidc import OidcDiscoveryServer
from bridge.devstack.workload_api import DEFAULT_SVID_TTL, Identity, WorkloadApiServer

AWS_AUDIENCE = "sts.amazonaws.com"
DEMO_ROLE_ARN = "arn:aws:iam::111122223333:role/demo"
DEMO_ROLE_MAX_SESSION = 12 * 3600
SOCKET_NAME = "agent.sock"


class DevStack:
    """Owns and wires the emulators; `start()`/`stop()` or use as a context manager."""

    def __init__(
        self,
        workdir: Path,
        *,
        trust_domain: str = "example.org",
        identities: Iterable[Identity | str] | None = None,
        svid_ttl: int = DEFAULT_SVID_TTL,
    ) -> None:
        """Build (but do not start) the stack; the agent socket is `workdir/agent.sock`.

        `identities` defaults to the single `spiffe://<trust_domain>/demo`.

        Raises:
            ValueError: the socket path exceeds the AF_UNIX limit (pick a shorter
                `workdir`, e.g. under /tmp), or an identity is outside `trust_domain`.
        """
        self._workdir = Path(workdir).absolute()
        self.authority = JwtAuthority(trust_domain)
        self.oidc = OidcDiscoveryServer(self.authority.jwks)
        self.workload = WorkloadApiServer(
            self.authority,
            self._workdir / SOCKET_NAME,
            identities=(f"spiffe://{trust_domain}/demo",) if identities is None else identities,
            svid_ttl=svid_ttl,
        )
        self.aws = AwsStsEmulator()
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

    def start(self) -> DevStack:
        """Start every emulator and pre-register the demo AWS provider and role.

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

    def _stop_all(self) -> None:
        self.workload.stop()
        self.aws.stop()
        self.oidc.stop()

    def __enter__(self) -> DevStack:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
