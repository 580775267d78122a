"""EC2 instance metadata (IMDSv2 only), enough for the SDKs' instance-role provider.

    AWS_EC2_METADATA_SERVICE_ENDPOINT=http://127.0.0.1:PORT/

What botocore's `InstanceMetadataFetcher` does, and what is answered:

1. `PUT /latest/api/token` with `X-aws-ec2-metadata-token-ttl-seconds: 21600` -> a token
   as the body, the TTL echoed in the same header (the Go v2 SDK needs the echo). A TTL
   outside 1..21600, or none, is 400. A GET there is 405.
2. `GET /latest/meta-data/iam/security-credentials/` with `X-aws-ec2-metadata-token`
   -> the role name, which is the target's name.
3. `GET .../security-credentials/<name>` -> `{Code: Success, LastUpdated, Type:
   AWS-HMAC, AccessKeyId, SecretAccessKey, Token, Expiration}`; 503 with no material
   when the target has no valid credential.

Every GET needs a valid, unexpired token (401 otherwise): IMDSv1 is off, as with
`HttpTokens: required`. Tokens are stateless: an expiry and a nonce, MACed with a key
that lives only in this process, so there is nothing to store and nothing to bound.
A proxied request (`X-Forwarded-For`) is refused by the shared server, as real IMDS
refuses a token PUT through a proxy.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from bridge.clouds.aws.material import AwsCredentials
from bridge.clouds.base import Target
from bridge.metrics import Metrics
from bridge.model import Credential, utc_iso
from bridge.serving.http1 import Reply, Request
from bridge.serving.metadata import (
    CloudEndpoint,
    LoopbackServer,
    MetadataContext,
    json_reply,
    text,
)
from bridge.store import CredentialStore

TOKEN_PATH = "/latest/api/token"  # noqa: S105 - a URL path, not a secret
CREDENTIALS_PATH = "/latest/meta-data/iam/security-credentials/"
TTL_HEADER = "X-aws-ec2-metadata-token-ttl-seconds"
TOKEN_HEADER = "X-aws-ec2-metadata-token"  # noqa: S105 - a header name
MAX_TTL = 21600
_PAYLOAD = 16  # 8 bytes expiry (ms, monotonic) + 8 bytes nonce
_TOKEN_CHARS = 64  # base64url of payload + SHA-256 MAC, unpadded


@dataclass(frozen=True, slots=True)
class ImdsConfig:
    """`metadata.imds`: the listener (it serves one target: the instance's role)."""

    address: str
    allowed_uids: tuple[int, ...] | None = None  # None: every local user


class ImdsEndpoint(CloudEndpoint):
    """The `metadata.imds` section and `serve: [imds]` (an `Endpoint`)."""

    key = "imds"
    single = True
    cloud, title = "aws", "an AWS"
    config_type = ImdsConfig

    def build(self, config: object, targets: Sequence[Target],
              context: MetadataContext) -> ImdsServer:
        assert isinstance(config, ImdsConfig)
        return ImdsServer(config, targets[0], store=context.store, now=context.clock.monotonic,
                          monotonic=context.clock.monotonic, metrics=context.metrics)


class SessionTokens:
    """IMDSv2 session tokens: issued with a TTL, checked in constant time."""

    def __init__(self, monotonic: Callable[[], float]) -> None:
        self._monotonic = monotonic
        self._key = secrets.token_bytes(32)

    def issue(self, ttl: int) -> str:
        expiry = int((self._monotonic() + ttl) * 1000)
        payload = expiry.to_bytes(8, "big") + secrets.token_bytes(8)
        mac = hmac.new(self._key, payload, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(payload + mac).decode().rstrip("=")

    def valid(self, token: str) -> bool:
        if len(token) != _TOKEN_CHARS or not token.isascii():
            return False
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except (ValueError, binascii.Error):
            return False
        payload, mac = raw[:_PAYLOAD], raw[_PAYLOAD:]
        if not hmac.compare_digest(mac, hmac.new(self._key, payload, hashlib.sha256).digest()):
            return False
        return int.from_bytes(payload[:8], "big") / 1000 > self._monotonic()


class ImdsServer(LoopbackServer):
    endpoint = "imds"
    methods = ("GET", "PUT")

    def __init__(self, config: ImdsConfig, target: Target, *, store: CredentialStore,
                 now: Callable[[], float], monotonic: Callable[[], float],
                 metrics: Metrics | None = None) -> None:
        super().__init__(config.address, metrics=metrics, allowed_uids=config.allowed_uids)
        self._role = target.name
        self._store = store
        self._now = now
        self._tokens = SessionTokens(monotonic)
        self._reply: tuple[Credential, Reply] | None = None  # built once per credential

    def take(self, other: LoopbackServer) -> None:
        assert isinstance(other, ImdsServer)
        self._role, self._store, self._now = other._role, other._store, other._now
        self._reply = None

    def describe(self) -> str:
        return (f"IMDSv2 emulation on {self.url}/ for {self._role} "
                "(AWS_EC2_METADATA_SERVICE_ENDPOINT) to "
                f"{self.readers()}")

    def handle(self, request: Request) -> Reply:
        if request.method == "PUT":
            return self._issue(request)
        if request.path == TOKEN_PATH:
            return text(405, "method not allowed\n", headers=(("Allow", "PUT"),))
        token = request.headers.get(TOKEN_HEADER)
        if token is None or not self._tokens.valid(token):
            return text(401, "Unauthorized\n", refusal="token")
        if request.path in (CREDENTIALS_PATH, CREDENTIALS_PATH[:-1]):
            return text(200, self._role)
        if request.path.startswith(CREDENTIALS_PATH):
            name = request.path[len(CREDENTIALS_PATH):]
            if name in (self._role, self._role + "/"):
                return self._credentials()
        return text(404, "Not Found\n")

    def _issue(self, request: Request) -> Reply:
        if request.path != TOKEN_PATH:
            return text(405, "method not allowed\n", headers=(("Allow", "GET"),))
        ttl_text = (request.headers.get(TTL_HEADER) or "").strip()
        if not (ttl_text.isascii() and ttl_text.isdigit() and len(ttl_text) <= 5
                and 1 <= int(ttl_text) <= MAX_TTL):  # 5 digits first: int() of 5,000 raises
            return text(400, f"{TTL_HEADER} must be 1..{MAX_TTL}\n")
        ttl = int(ttl_text)
        return text(200, self._tokens.issue(ttl), headers=((TTL_HEADER, str(ttl)),))

    def _credentials(self) -> Reply:
        status = self._store.get(self._role)
        credential = status.valid_credential(self._now()) if status is not None else None
        if credential is None or not isinstance(credential.material, AwsCredentials):
            return json_reply(503, {"Code": "CredentialUnavailable",
                                    "Message": f"no valid credential for {self._role} "
                                               "right now; retry later"})
        cached = self._reply
        if cached is None or cached[0] is not credential:
            aws = credential.material
            body = json.dumps({
                "Code": "Success",
                "LastUpdated": utc_iso(credential.issued_at),
                "Type": "AWS-HMAC",
                "AccessKeyId": aws.access_key_id,
                "SecretAccessKey": aws.secret_access_key,
                "Token": aws.session_token,
                "Expiration": utc_iso(credential.expires_at),
            }).encode()
            # real IMDS labels it text/plain too
            cached = self._reply = (credential, Reply(200, body, "text/plain"))
        return cached[1]
