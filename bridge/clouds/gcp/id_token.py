"""`generateIdToken` for a service account: the Google ID token a GCP->AWS chain
presents to AWS STS as its web identity token.

google-auth's ID-token class has no endpoint override and needs `requests`, so this
one IAM call is made directly over urllib3 (the transport google-auth uses here).
"""

from __future__ import annotations

import json

import jwt
import urllib3

from bridge.clouds.base import wrong_input
from bridge.clouds.gcp.classify import classify_iam
from bridge.clouds.gcp.config import GcpHopConfig
from bridge.clouds.gcp.federation import SKEW_SERVICE, DatedPool
from bridge.clouds.gcp.material import GcpToken
from bridge.clouds.gcp.quota import iam_quota
from bridge.errors import ExchangeError
from bridge.model import IdToken, Material


class GcpIdTokenHop:
    """Service account token (with its federated token) -> Google ID token for AWS."""

    name = "gcp_id_token"

    def __init__(self, target: GcpHopConfig, *, audience: str,
                 http: DatedPool) -> None:
        self._target = target
        self.scope = f"gcp_iam {target.iam_credentials_endpoint}"
        self.quota = iam_quota(target.service_account or "")
        self.judge = SKEW_SERVICE
        self._audience = audience
        self._http = http

    def exchange(self, material: Material) -> IdToken:
        if not isinstance(material, GcpToken) or not self._target.service_account:
            raise wrong_input(self.name, material)
        sa = self._target.service_account
        url = (f"{self._target.iam_credentials_endpoint}/v1/projects/-/serviceAccounts/"
               f"{sa}:generateIdToken")
        body = {"audience": self._audience, "includeEmail": True,
                "delegates": [f"projects/-/serviceAccounts/{d}"
                              for d in self._target.delegates]}
        bearer = material.federated_token or material.access_token
        try:
            response = self._http.request(
                "POST", url, body=json.dumps(body).encode(),
                headers={"Content-Type": "application/json",
                         "Authorization": f"Bearer {bearer}"})
        except urllib3.exceptions.HTTPError as exc:
            raise ExchangeError(f"cannot reach IAM Credentials: {type(exc).__name__}",
                                hop=self.name, code="ConnectionError", retryable=True,
                                reason="unreachable") from exc
        if response.status != 200:
            raise classify_iam(response.status, response.data, hop=self.name)
        try:
            token = str(json.loads(response.data)["token"])
        except (KeyError, ValueError, TypeError):
            # Hidden: a JSONDecodeError holds the whole response, which may hold the token.
            raise ExchangeError("no token in the generateIdToken response", hop=self.name,
                                code="BadResponse", retryable=True,
                                reason="unavailable") from None
        return IdToken(token=token, subject=sa,
                       expires_at=self._http.local_expiry(_jwt_exp(token)))


def _jwt_exp(token: str) -> float:
    try:
        exp = jwt.decode(token, options={"verify_signature": False}).get("exp")
    except jwt.PyJWTError:
        return 0.0
    return float(exp) if isinstance(exp, int | float) else 0.0


