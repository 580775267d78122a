"""The GCE metadata server, enough for google-auth's `compute_engine.Credentials`.

    GCE_METADATA_HOST=127.0.0.1:PORT   # token, account info, project ID
    GCE_METADATA_IP=127.0.0.1:PORT     # the detection ping (google.auth.default())

What google-auth (compute_engine/_metadata.py) calls, always with `Metadata-Flavor:
Google`, and what it checks:

- `GET /` (ping): 200 and the response header `Metadata-Flavor: Google`. The one path
  answered without the request's flavor header, as the real server does: Go's
  `metadata.OnGCE` pings it bare.
- `GET /computeMetadata/v1/instance/service-accounts/default/?recursive=true`: JSON
  (parsed only with `Content-Type: application/json`) with `email` (required), `scopes`
  and `aliases`.
- `GET .../default/token[?scopes=a,b]`: JSON `access_token`, `expires_in`,
  `token_type`. Requested scopes are ignored, as on Compute Engine: the token has the
  target's scopes. google-auth retries 5xx, so 503 (no valid token) rides out a refresh.
- `GET /computeMetadata/v1/project/project-id`: text; `universe/universe-domain`.

Also served: `.../default/email`, `.../scopes` (one per line), `.../aliases`, and
every `default` path spelled with the account's email. Directories (`/computeMetadata`,
`v1`, `v1/instance`, `v1/project`, `v1/universe`, `service-accounts`) answer 200 with
their listing, with or without the trailing slash, as the real server does: Node's
gcp-metadata detects GCE by `GET .../v1/instance`. The flavor header is required on
every other request (403 without) and sent on every reply.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from bridge.clouds.base import Target
from bridge.clouds.gcp.config import GcpHopConfig
from bridge.clouds.gcp.material import GcpToken
from bridge.metrics import Metrics
from bridge.model import Credential
from bridge.schema import Section, clip
from bridge.serving.http1 import Reply, Request
from bridge.serving.metadata import (
    CloudEndpoint,
    LoopbackServer,
    MetadataContext,
    json_reply,
    text,
)
from bridge.serving.metadata.endpoint import ServedTarget
from bridge.store import CredentialStore

V1 = "/computeMetadata/v1/"
ACCOUNTS = V1 + "instance/service-accounts/"
FLAVOR = ("Metadata-Flavor", "Google")
# Each directory (without its trailing slash; "" is the root) and its listing.
_LISTINGS = {"": "computeMetadata/\n", "/computeMetadata": "v1/\n",
             V1[:-1]: "instance/\nproject/\nuniverse/\n", V1 + "instance": "service-accounts/\n",
             V1 + "project": "project-id\n", V1 + "universe": "universe-domain\n"}
_PROJECT_ID = re.compile(r"[a-z][a-z0-9-]{4,28}[a-z0-9]", re.ASCII)
_PROJECT_FROM_EMAIL = re.compile(
    r"[^@]+@(?P<project>[a-z][a-z0-9-]{4,28}[a-z0-9])\.iam\.gserviceaccount\.com", re.ASCII)


@dataclass(frozen=True, slots=True)
class GceConfig:
    """`metadata.gce`: the listener, and the project ID it reports (else the service
    account's project)."""

    address: str
    allowed_uids: tuple[int, ...] | None = None  # None: every local user
    project_id: str | None = None


class GceEndpoint(CloudEndpoint):
    """The `metadata.gce` section and `serve: [gce]` (an `Endpoint`)."""

    key = "gce"
    single = True
    cloud, title = "gcp", "a GCP"
    config_type = GceConfig

    def read_extra(self, section: Section, *, directory: str) -> dict[str, object]:
        return {"project_id": section.get("project_id", str, "", check=_check_project_id)
                or None}

    def serve_problem(self, target: ServedTarget) -> str | None:
        final = target.final
        if not isinstance(final, GcpHopConfig):
            return super().serve_problem(target)
        if not final.service_account:
            return "gce needs `service_account`: SDKs ask the metadata server for the " \
                   "account's email"
        return None

    def build(self, config: object, targets: Sequence[Target],
              context: MetadataContext) -> GceServer:
        assert isinstance(config, GceConfig)
        return GceServer(config, targets[0], store=context.store, now=context.clock.monotonic,
                         metrics=context.metrics)


def _check_project_id(v: str) -> str | None:
    if _PROJECT_ID.fullmatch(v):
        return None
    return f"{clip(v)} is not a Google Cloud project ID (6-30 of [a-z0-9-])"


def project_from_email(email: str | None) -> str | None:
    match = _PROJECT_FROM_EMAIL.fullmatch(email or "")
    return match.group("project") if match else None


class GceServer(LoopbackServer):
    endpoint = "gce"

    def __init__(self, config: GceConfig, target: Target, *, store: CredentialStore,
                 now: Callable[[], float], metrics: Metrics | None = None) -> None:
        super().__init__(config.address, metrics=metrics, allowed_uids=config.allowed_uids)
        final = target.final
        gcp = final if isinstance(final, GcpHopConfig) else None
        self._target = target.name
        self._email = gcp.service_account if gcp is not None else None
        self._scopes = tuple(gcp.scopes) if gcp is not None else ()
        self._project = config.project_id or project_from_email(self._email)
        self._store = store
        self._now = now

    def take(self, other: LoopbackServer) -> None:
        assert isinstance(other, GceServer)
        self._target, self._email, self._scopes = other._target, other._email, other._scopes
        self._project, self._store, self._now = other._project, other._store, other._now

    def describe(self) -> str:
        return (f"GCE metadata emulation on {self.url} for {self._target} "
                "(GCE_METADATA_HOST and GCE_METADATA_IP) to "
                f"{self.readers()}")

    def reply_headers(self) -> tuple[tuple[str, str], ...]:
        return (FLAVOR,)

    def precheck(self, request: Request) -> Reply | None:
        if request.path != "/" and request.single("Metadata-Flavor") != "Google":
            return text(403, "Missing required header: Metadata-Flavor: Google\n",
                        refusal="flavor")
        return None

    def handle(self, request: Request) -> Reply:
        path = request.path
        directory = _LISTINGS.get(path[:-1] if path.endswith("/") else path)
        if directory is not None:
            return text(200, directory)
        if path == V1 + "project/project-id":
            return text(200, self._project) if self._project else _not_found()
        if path == V1 + "universe/universe-domain":
            return text(200, "googleapis.com")
        if path in (ACCOUNTS, ACCOUNTS[:-1]):
            return text(200, "".join(f"{a}/\n" for a in self._aliases()))
        if path.startswith(ACCOUNTS):
            account, _, leaf = path[len(ACCOUNTS):].partition("/")
            if account in self._aliases():
                return self._account(leaf, recursive=request.param("recursive") == "true")
        return _not_found()

    def _aliases(self) -> tuple[str, ...]:
        return ("default", self._email) if self._email else ("default",)

    def _account(self, leaf: str, *, recursive: bool) -> Reply:
        if leaf == "" and recursive:
            info: dict[str, object] = {"aliases": ["default"], "scopes": list(self._scopes)}
            if self._email:
                info["email"] = self._email
            return json_reply(200, info)
        if leaf == "token":
            return self._token()
        if leaf == "email":
            return text(200, self._email) if self._email else _not_found()
        values = {"": "aliases\nemail\nscopes\ntoken\n", "aliases": "default\n",
                  "scopes": "".join(f"{s}\n" for s in self._scopes)}
        return text(200, values[leaf]) if leaf in values else _not_found()

    def _token(self) -> Reply:
        now = self._now()
        status = self._store.get(self._target)
        credential = status.valid_credential(now) if status is not None else None
        if credential is None or not isinstance(credential.material, GcpToken) or int(
                credential.remaining(now)) < 1:
            return json_reply(503, {"error": "unavailable",
                                    "error_description": f"no valid token for {self._target} "
                                                         "right now; retry later"})
        return Reply(200, _token_body(credential, now), "application/json")


def _token_body(credential: Credential, now: float) -> bytes:
    gcp = credential.material
    assert isinstance(gcp, GcpToken)
    return json.dumps({"access_token": gcp.access_token,
                       "expires_in": int(credential.remaining(now)),
                       "token_type": gcp.token_type}).encode()


def _not_found() -> Reply:
    return text(404, "Not Found\n")
