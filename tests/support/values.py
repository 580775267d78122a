"""Small builders shared by tests (values only; no fakes of our own code here)."""

from __future__ import annotations

import os
import secrets
import tempfile
import time
from pathlib import Path

from bridge.clouds.aws import AwsCredentials
from bridge.devstack import AWS_AUDIENCE, DEMO_ROLE_ARN, DEMO_ROLE_MAX_SESSION, DevStack
from bridge.devstack.aws import AwsStsEmulator
from bridge.model import Credential, JwtSvid, State, TargetStatus


def aws_credential(target: str, *, now: float, lifetime: float = 3600.0) -> Credential:
    aws = AwsCredentials(access_key_id="ASIA" + secrets.token_hex(8).upper(),
                         secret_access_key=secrets.token_urlsafe(30),
                         session_token=secrets.token_urlsafe(200), expires_at=now + lifetime)
    return Credential(target=target, material=aws, issued_at=now, expires_at=now + lifetime,
                      svid_expires_at=now + 300, deadline=now + lifetime, received=now)


def fresh_status(target: str, *, now: float, lifetime: float = 3600.0) -> TargetStatus:
    return TargetStatus(name=target, state=State.FRESH, delivered=True,
                        credential=aws_credential(target, now=now, lifetime=lifetime))


def svid(*, now: float, ttl: float = 300.0, spiffe_id: str = "spiffe://example.org/w") -> JwtSvid:
    return JwtSvid(spiffe_id=spiffe_id, audience="sts.amazonaws.com", expires_at=now + ttl,
                   issued_at=now, token="eyJhbGciOiJFUzI1NiJ9." + secrets.token_urlsafe(40)
                   + "." + secrets.token_urlsafe(40), deadline=now + ttl)


def tmpfs_dir() -> Path:
    """A fresh directory on tmpfs (/dev/shm), as the bridge wants for credentials."""
    return Path(tempfile.mkdtemp(prefix="sb-", dir="/dev/shm"))


def trusting_sts(stack: DevStack, *, offset: float = 0.0,
                 short_lived: bool = False) -> AwsStsEmulator:
    """A second, started STS emulator trusting the stack's issuer for the demo role, its
    clock `offset` seconds from ours. `short_lived`: its answers are dated by the real
    clock, so a session of a clock behind (negative offset) really ends sooner (an STS
    handing out near-expired sessions); else the whole STS is skewed, Date and all."""
    sts = AwsStsEmulator(clock=lambda: time.time() + offset,
                         date_clock=time.time if short_lived else None)
    sts.start()
    sts.register_oidc_provider(stack.issuer, [AWS_AUDIENCE])
    sts.add_role(DEMO_ROLE_ARN, provider_url=stack.issuer, aud=AWS_AUDIENCE,
                 sub=f"spiffe://{stack.trust_domain}/*",
                 max_session_duration=DEMO_ROLE_MAX_SESSION)
    return sts


def fill_until_full(path: Path) -> None:
    """Write zeros to `path` until the filesystem refuses (ENOSPC)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError:
        pass
    finally:
        os.close(fd)
