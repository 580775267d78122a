"""sts:GetWebIdentityToken (AWS outbound identity federation): the AWS session of one
hop becomes a JWT about its role for the next hop's audience (AWS->Azure: Entra's
federated credential trusts the account's issuer). Signed with that session. The token
is asked for its longest, 1 h (STS's default is 5 min): a chain's credential expires
with its earliest hop, so a 5 min token would make the next hop's token a 5 min one.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import botocore.exceptions

from bridge.clouds.aws.config import AwsHopConfig
from bridge.clouds.aws.material import AwsCredentials
from bridge.clouds.aws.sts import (
    SKEW_SERVICE,
    StsClients,
    _classify_client_error,
    _observe,
    sts_scope,
)
from bridge.clouds.base import wrong_input
from bridge.errors import ExchangeError
from bridge.model import IdToken, Material
from bridge.skew import ClockSkew, lifetime

TOKEN_LIFETIME = 3600  # GetWebIdentityToken's maximum DurationSeconds


class AwsWebTokenHop:
    """AWS session -> a web identity token (JWT) for `audience`."""

    name = "aws_web_token"

    def __init__(self, target: AwsHopConfig, *, audience: str, clients: StsClients,
                 skew: ClockSkew | None = None, now: Callable[[], float] = time.time) -> None:
        self._target = target
        self._audience = audience
        self._clients = clients
        self._skew = skew
        self._now = now
        self.scope = sts_scope(target)
        self.judge = SKEW_SERVICE

    def exchange(self, material: Material) -> IdToken:
        if not isinstance(material, AwsCredentials):
            raise wrong_input(self.name, material)
        client = self._clients.client(self._target, signed_with=material)
        sent = self._now()
        try:
            out = client.get_web_identity_token(Audience=[self._audience],
                                                SigningAlgorithm="RS256",
                                                DurationSeconds=TOKEN_LIFETIME)
        except botocore.exceptions.ClientError as exc:
            _observe(self._skew, exc.response, sent, self._now())
            raise _classify_client_error(exc, self.name) from None
        except botocore.exceptions.BotoCoreError as exc:
            raise ExchangeError(f"STS call failed: {type(exc).__name__}", hop=self.name,
                                code="ClientFailure", retryable=True,
                                reason="unavailable") from None
        _observe(self._skew, out, sent, self._now())
        date = out.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("date")
        left = lifetime(out["Expiration"].timestamp(), date, fallback_now=sent)
        return IdToken(token=str(out["WebIdentityToken"]),
                       subject=material.assumed_role_arn or self._target.role_arn,
                       expires_at=sent + left)
