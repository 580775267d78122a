"""The AWS container credentials provider: what botocore's `ContainerProvider` reads.

    AWS_CONTAINER_CREDENTIALS_FULL_URI=http://127.0.0.1:PORT/v1/credentials/<target>
    AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE=<metadata.container.token_file>

botocore accepts plain http only to a loopback IP, `localhost`, or the ECS/EKS link-local
hosts, and sends the token file's content, unchanged, as the `Authorization` header (it
refuses a value with CR or LF, so the file has no trailing newline; it re-reads the file
on every fetch). The reply is `AccessKeyId`, `SecretAccessKey`, `Token`, `Expiration`
(RFC 3339, Z), plus `RoleArn` and `AccountId` from the target's final role. botocore
re-fetches when less than 15 minutes are left.

The token is random per process (`LocalTokens`) and written atomically, 0600, before
the first request is served. A config reload (SIGHUP) restarts the listener with the
same token, so a client that read the file just before keeps working once the listener
is back; the file is left in place at stop (a dead process's token opens nothing). A missing
`Authorization` is 401, a wrong one 403, compared in constant time; only then does the
target name matter (404 if it is not served here), so a caller without the token learns
nothing. No valid credential (expired, or none yet) is 503 with no material.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from bridge.clouds.aws.config import AwsHopConfig
from bridge.clouds.aws.material import AwsCredentials
from bridge.clouds.base import Target
from bridge.logs import Redactor
from bridge.metrics import Metrics
from bridge.model import Credential, utc_iso
from bridge.schema import Section, check_abs_path
from bridge.serving.http1 import Reply, Request
from bridge.serving.metadata import (
    CloudEndpoint,
    LocalTokens,
    LoopbackServer,
    MetadataContext,
    json_reply,
    text,
    write_token_file,
)
from bridge.store import CredentialStore

PREFIX = "/v1/credentials/"
TOKEN_FILE_NAME = "container.token"  # noqa: S105 - a file name, not a secret


@dataclass(frozen=True, slots=True)
class ContainerConfig:
    """`metadata.container`: the listener and where its callers find the token."""

    address: str
    token_file: Path
    allowed_uids: tuple[int, ...] | None = None  # None: every local user (with the token)


class ContainerEndpoint(CloudEndpoint):
    """The `metadata.container` section and `serve: [container]` (an `Endpoint`)."""

    key = "container"
    single = False
    cloud, title = "aws", "an AWS"
    config_type = ContainerConfig
    uids_required = False  # the token file is the gate

    def gate(self, config: object) -> str:
        assert isinstance(config, ContainerConfig)
        return f"that can read {config.token_file}"

    def read_extra(self, section: Section, *, directory: str) -> dict[str, object]:
        default_file = str(Path(directory or "/") / TOKEN_FILE_NAME)
        token_file = section.get("token_file", str, default_file, check=check_abs_path)
        return {"token_file": Path(token_file)}

    def build(self, config: object, targets: Sequence[Target],
              context: MetadataContext) -> ContainerServer:
        assert isinstance(config, ContainerConfig)
        return ContainerServer(config, targets, store=context.store,
                               now=context.clock.monotonic,
                               tokens=context.tokens, metrics=context.metrics,
                               redactor=context.redactor)


class ContainerServer(LoopbackServer):
    endpoint = "container"

    def __init__(self, config: ContainerConfig, targets: Sequence[Target], *,
                 store: CredentialStore, now: Callable[[], float],
                 tokens: LocalTokens | None = None, metrics: Metrics | None = None,
                 redactor: Redactor | None = None) -> None:
        super().__init__(config.address, metrics=metrics, allowed_uids=config.allowed_uids)
        self._token_file = config.token_file
        self._roles = {t.name: t.final.role_arn for t in targets
                       if isinstance(t.final, AwsHopConfig)}
        self._store = store
        self._now = now
        self._tokens = tokens or LocalTokens()  # the supervisor's outlives a reload
        self._redactor = redactor
        self._token = b""
        self._replies: dict[str, tuple[Credential, Reply]] = {}  # built once per credential

    def listen_key(self) -> tuple[object, ...]:
        return (*super().listen_key(), self._token_file)

    def take(self, other: LoopbackServer) -> None:
        assert isinstance(other, ContainerServer)
        self._roles, self._store, self._now = other._roles, other._store, other._now
        self._replies = {}

    @property
    def token_file(self) -> Path:
        return self._token_file

    def describe(self) -> str:
        return (f"AWS container credentials on {self.url}{PREFIX}<target> for "
                f"{', '.join(sorted(self._roles))} (token file {self._token_file})")

    def bound(self) -> None:
        token = self._tokens.token_for(self._token_file)
        if self._redactor is not None:
            self._redactor.add(token)
        write_token_file(self._token_file, token)
        self._token = token.encode()

    def handle(self, request: Request) -> Reply:
        if not request.path.startswith(PREFIX):
            return text(404, "not found\n")
        if "authorization" not in request.names:
            return text(401, "missing Authorization\n", refusal="token")
        presented = request.single("Authorization")  # None when sent twice
        if presented is None or not hmac.compare_digest(
                presented.encode("latin-1", "replace"), self._token):
            return text(403, "wrong Authorization\n", refusal="token")
        name = request.path[len(PREFIX):]
        role_arn = self._roles.get(name)
        if role_arn is None:
            return _error(404, "UnknownTarget", "this target is not served here")
        status = self._store.get(name)
        credential = status.valid_credential(self._now()) if status is not None else None
        if credential is None or not isinstance(credential.material, AwsCredentials):
            return _error(503, "CredentialUnavailable",
                          f"no valid credential for {name} right now; retry later")
        cached = self._replies.get(name)
        if cached is None or cached[0] is not credential:
            cached = (credential, Reply(200, _render(credential, role_arn), "application/json"))
            self._replies[name] = cached
        return cached[1]


def _render(credential: Credential, role_arn: str) -> bytes:
    aws = credential.material
    assert isinstance(aws, AwsCredentials)
    return json.dumps({
        "AccessKeyId": aws.access_key_id,
        "SecretAccessKey": aws.secret_access_key,
        "Token": aws.session_token,
        "Expiration": utc_iso(credential.expires_at),
        "RoleArn": role_arn,
        "AccountId": role_arn.split(":")[4],
    }).encode()


def _error(status: int, code: str, message: str) -> Reply:
    return json_reply(status, {"Code": code, "Message": message})
