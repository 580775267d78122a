"""What the token exchange and IAM Credentials work on, passed as one value. DEVELOPMENT ONLY.

The emulator owns the state; `sts.token_exchange` and `iam.generate_token` are plain
functions of it, so each can be read and tested on its own.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from bridge.devstack.gcp.aws_replay import AwsReplay
from bridge.devstack.gcp.google_issuer import GoogleIdTokenIssuer
from bridge.devstack.gcp.project import GcpProject
from bridge.devstack.gcp.tokens import TokenStore
from bridge.devstack.jwks import IssuerKeys


@dataclass(frozen=True, slots=True)
class GcpContext:
    """Providers and service accounts, issued tokens, issuers' keys, the AWS replay,
    the ID-token issuer and the emulator's clock."""

    project: GcpProject
    tokens: TokenStore
    keys: IssuerKeys
    replay: AwsReplay
    idp_timeout: float
    issuer: GoogleIdTokenIssuer
    clock: Callable[[], float]
