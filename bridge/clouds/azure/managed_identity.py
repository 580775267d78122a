"""Azure managed-identity endpoints, enough for azure-identity's
`ManagedIdentityCredential` (and so `DefaultAzureCredential`) unmodified, in the two
forms its MSAL core speaks (msal/managed_identity.py):

- **App Service** (`metadata.azure_app_service`, `serve: [azure_app_service]`):

      IDENTITY_ENDPOINT=http://127.0.0.1:PORT/msi/token
      IDENTITY_HEADER=$(cat <header_file>)

  `GET /msi/token?api-version=2019-08-01&resource=R[&client_id=C]` with
  `X-IDENTITY-HEADER`: the secret, random per process, written 0600 to `header_file`
  and compared in constant time (missing: 401, wrong: 403, before anything else is
  looked at). Reply: `access_token`, `expires_on` (epoch seconds, a string as App
  Service sends it), `resource`, `token_type`, `client_id`.
- **IMDS** (`metadata.azure_imds`, `serve: [azure_imds]`):

      AZURE_POD_IDENTITY_AUTHORITY_HOST=http://127.0.0.1:PORT

  `GET /metadata/identity/oauth2/token?api-version=2018-02-01&resource=R[&client_id=C]`
  with `Metadata: true` (else 400, as IMDS answers). Any local process could ask, so
  `allowed_uids` is required. Reply: `access_token`, `expires_in`, `expires_on`,
  `not_before`, `resource`, `token_type` (IMDS sends the numbers as strings).

Both: forwarded requests are refused (`LoopbackServer`), the identity is chosen by
`client_id` (optional when one is served), the token is the target's, for its one
resource (another resource: 400 `invalid_resource`). No valid token: 503 (azure-identity
retries it), with no material.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from bridge.clouds.azure.config import AzureHopConfig
from bridge.clouds.azure.material import AzureToken
from bridge.clouds.base import Target
from bridge.logs import Redactor
from bridge.metrics import Metrics
from bridge.model import Credential
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

APP_SERVICE_PATH = "/msi/token"
IMDS_PATH = "/metadata/identity/oauth2/token"
HEADER_FILE_NAME = "azure-identity.header"


@dataclass(frozen=True, slots=True)
class AppServiceConfig:
    """`metadata.azure_app_service`: the listener and where callers find the secret."""

    address: str
    header_file: Path
    allowed_uids: tuple[int, ...] | None = None  # None: every local user (with the secret)


@dataclass(frozen=True, slots=True)
class ImdsConfig:
    """`metadata.azure_imds`: the listener."""

    address: str
    allowed_uids: tuple[int, ...] | None = None


class _Served(CloudEndpoint):
    single = False
    cloud, title = "azure", "an Azure"


class AppServiceEndpoint(_Served):
    """The `metadata.azure_app_service` section and `serve: [azure_app_service]`."""

    key = "azure_app_service"
    config_type = AppServiceConfig
    uids_required = False  # the secret header is the gate

    def gate(self, config: object) -> str:
        assert isinstance(config, AppServiceConfig)
        return f"that can read {config.header_file}"

    def read_extra(self, section: Section, *, directory: str) -> dict[str, object]:
        default_file = str(Path(directory or "/") / HEADER_FILE_NAME)
        return {"header_file": Path(section.get("header_file", str, default_file,
                                                check=check_abs_path))}

    def build(self, config: object, targets: Sequence[Target],
              context: MetadataContext) -> AppServiceServer:
        assert isinstance(config, AppServiceConfig)
        return AppServiceServer(config, targets, store=context.store,
                                now=context.clock.monotonic, wall=context.clock.time,
                                tokens=context.tokens, metrics=context.metrics,
                                redactor=context.redactor)


class ImdsEndpoint(_Served):
    """The `metadata.azure_imds` section and `serve: [azure_imds]`."""

    key = "azure_imds"
    config_type = ImdsConfig

    def build(self, config: object, targets: Sequence[Target],
              context: MetadataContext) -> AzureImdsServer:
        assert isinstance(config, ImdsConfig)
        return AzureImdsServer(config.address, targets, store=context.store,
                               now=context.clock.monotonic, wall=context.clock.time,
                               metrics=context.metrics, allowed_uids=config.allowed_uids)


class _IdentityServer(LoopbackServer):
    """What both forms share: the identity by client_id and resource, the store read."""

    path = ""

    def __init__(self, address: str, targets: Sequence[Target], *, store: CredentialStore,
                 now: Callable[[], float], wall: Callable[[], float],
                 metrics: Metrics | None, allowed_uids: tuple[int, ...] | None) -> None:
        super().__init__(address, metrics=metrics, allowed_uids=allowed_uids)
        self._identities = _identities(targets)
        self._store = store
        self._now = now
        self._wall = wall

    def take(self, other: LoopbackServer) -> None:
        assert isinstance(other, _IdentityServer)
        self._identities, self._store = other._identities, other._store
        self._now, self._wall = other._now, other._wall

    def served(self) -> str:
        return ", ".join(sorted(name for name, _ in self._identities.values()))

    def token(self, request: Request) -> tuple[Credential, AzureHopConfig] | Reply:
        found = self._select(request)
        if isinstance(found, Reply):
            return found
        name, hop = found
        status = self._store.get(name)
        now = self._now()
        credential = status.valid_credential(now) if status is not None else None
        if credential is None or not isinstance(credential.material, AzureToken) or int(
                credential.remaining(now)) < 1:
            return self.error(503, "temporarily_unavailable",
                              f"no valid token for {name} right now; retry later")
        return credential, hop

    def _select(self, request: Request) -> tuple[str, AzureHopConfig] | Reply:
        resource = (request.param("resource") or "").rstrip("/")
        client_id = request.param("client_id")
        if not resource:
            return self.error(400, "invalid_request", "Required query variable 'resource' "
                              "is missing")
        if request.param("object_id") or request.param("msi_res_id") or request.param(
                "mi_res_id"):
            return self.error(400, "invalid_request", "only client_id selects an identity "
                              "here")
        clients = {c for c, _ in self._identities}
        if client_id is None and len(clients) > 1:
            return self.error(400, "invalid_request", "Multiple user assigned identities "
                              "exist, please specify the clientId of the identity in the "
                              "token request")
        client = client_id if client_id is not None else next(iter(clients), "")
        found = self._identities.get((client, resource))
        if found is None:
            if client not in clients:
                return self.error(400, "invalid_request", "Identity not found")
            return self.error(400, "invalid_resource", "this identity's token is for "
                              "another resource")
        return found

    def error(self, status: int, error: str, description: str) -> Reply:
        return json_reply(status, {"error": error, "error_description": description})

    def expires_on(self, credential: Credential) -> int:
        """The expiry in this host's wall-clock terms, from the monotonic deadline."""
        return int(self._wall() + credential.remaining(self._now()))


class AzureImdsServer(_IdentityServer):
    endpoint = "azure_imds"

    def describe(self) -> str:
        return (f"Azure IMDS managed identity on {self.url} for {self.served()} "
                f"(AZURE_POD_IDENTITY_AUTHORITY_HOST) to {self.readers()}")

    def precheck(self, request: Request) -> Reply | None:
        if request.path != IMDS_PATH:
            return None
        if request.single("Metadata") != "true":
            body = {"error": "invalid_request",
                    "error_description": "Required metadata header not specified"}
            return Reply(400, json.dumps(body).encode(), "application/json",
                         refusal="metadata")
        return None

    def handle(self, request: Request) -> Reply:
        if request.path != IMDS_PATH:
            return text(404, "Not Found\n")
        found = self.token(request)
        if isinstance(found, Reply):
            return found
        credential, hop = found
        z = credential.material
        assert isinstance(z, AzureToken)
        left = int(credential.remaining(self._now()))
        expires_on = self.expires_on(credential)
        return Reply(200, json.dumps({
            "access_token": z.access_token, "refresh_token": "", "expires_in": str(left),
            "expires_on": str(expires_on), "not_before": str(int(credential.issued_at)),
            "resource": hop.resource, "token_type": z.token_type,
            "client_id": hop.client_id}).encode(), "application/json")


class AppServiceServer(_IdentityServer):
    endpoint = "azure_app_service"

    def __init__(self, config: AppServiceConfig, targets: Sequence[Target], *,
                 store: CredentialStore, now: Callable[[], float], wall: Callable[[], float],
                 tokens: LocalTokens | None = None, metrics: Metrics | None = None,
                 redactor: Redactor | None = None) -> None:
        super().__init__(config.address, targets, store=store, now=now, wall=wall,
                         metrics=metrics, allowed_uids=config.allowed_uids)
        self._header_file = config.header_file
        self._tokens = tokens or LocalTokens()
        self._redactor = redactor
        self._secret = b""

    def listen_key(self) -> tuple[object, ...]:
        return (*super().listen_key(), self._header_file)

    @property
    def header_file(self) -> Path:
        return self._header_file

    def describe(self) -> str:
        return (f"Azure App Service managed identity on {self.url}{APP_SERVICE_PATH} for "
                f"{self.served()} (IDENTITY_ENDPOINT; IDENTITY_HEADER in "
                f"{self._header_file})")

    def bound(self) -> None:
        secret = self._tokens.token_for(self._header_file)
        if self._redactor is not None:
            self._redactor.add(secret)
        write_token_file(self._header_file, secret)
        self._secret = secret.encode()

    def handle(self, request: Request) -> Reply:
        if request.path != APP_SERVICE_PATH:
            return text(404, "Not Found\n")
        if "x-identity-header" not in request.names:
            return text(401, "missing X-IDENTITY-HEADER\n", refusal="token")
        presented = request.single("X-IDENTITY-HEADER")  # None when sent twice
        if presented is None or not hmac.compare_digest(
                presented.encode("latin-1", "replace"), self._secret):
            return text(403, "wrong X-IDENTITY-HEADER\n", refusal="token")
        found = self.token(request)
        if isinstance(found, Reply):
            return found
        credential, hop = found
        z = credential.material
        assert isinstance(z, AzureToken)
        return Reply(200, json.dumps({
            "access_token": z.access_token, "expires_on": str(self.expires_on(credential)),
            "resource": hop.resource, "token_type": z.token_type,
            "client_id": hop.client_id}).encode(), "application/json")


def _identities(targets: Sequence[Target]) -> dict[tuple[str, str], tuple[str, AzureHopConfig]]:
    """(client_id, resource) -> (target, its final hop)."""
    found: dict[tuple[str, str], tuple[str, AzureHopConfig]] = {}
    for t in targets:
        final = t.final
        if isinstance(final, AzureHopConfig):
            found.setdefault((final.client_id, final.resource), (t.name, final))
    return found
