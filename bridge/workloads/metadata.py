"""The AWS metadata endpoints (IMDSv2, container provider) answering each caller with
its *own* identity's credential, for unmodified SDKs.

Same wire protocol and the same loopback checks as the configured-target endpoints
(`clouds.aws.imds`, `clouds.aws.container`, `serving.metadata.http`); what differs is
who the credential is for. Each credentials request is identified anew, never per
connection (a kept-alive connection may have been handed to another process): the
process holding the caller's socket (`serving.processes.tcp_caller`), then the
lifecycle attests it through the broker and re-checks it (`workloads.lifecycle`).
A caller the bridge cannot pin to one process is refused (403), as is one the agent
issues no matching identity to.
"""

from __future__ import annotations

import hmac
import json
import logging
import threading
from collections.abc import Callable
from pathlib import Path

from bridge.clouds.aws.config import AwsHopConfig
from bridge.clouds.aws.imds import (
    CREDENTIALS_PATH,
    MAX_TTL,
    TOKEN_HEADER,
    TOKEN_PATH,
    TTL_HEADER,
    SessionTokens,
)
from bridge.clouds.aws.material import AwsCredentials
from bridge.clouds.gcp.gce import ACCOUNTS, FLAVOR, V1, GceConfig, GceServer
from bridge.config import TargetConfig
from bridge.config.workloads import WorkloadRule
from bridge.metrics import Metrics
from bridge.model import TargetStatus, utc_iso
from bridge.serving.bounded import Peer
from bridge.serving.http1 import Reply, Request
from bridge.serving.metadata import LocalTokens, LoopbackServer, json_reply, text, write_token_file
from bridge.serving.processes import tcp_caller
from bridge.store import CredentialStore
from bridge.workloads.lifecycle import Granted, WorkloadCredentials, WorkloadError

log = logging.getLogger(__name__)
PREFIX = "/v1/credentials/"
_STATUS = {"denied": 403, "not_found": 404, "unavailable": 503, "timeout": 503,
           "exhausted": 503, "failed": 500}


class _PerCaller(LoopbackServer):
    """What both endpoints share: the peer of the request being handled, and asking."""

    def __init__(self, address: str, *, credentials: WorkloadCredentials, timeout: float,
                 metrics: Metrics | None, allowed_uids: tuple[int, ...] | None) -> None:
        super().__init__(address, metrics=metrics, allowed_uids=allowed_uids)
        self._credentials = credentials
        self._timeout = timeout
        self._local = threading.local()

    def respond(self, request: Request, peer: Peer) -> Reply:
        self._local.peer = peer  # one request at a time per worker thread
        try:
            return super().respond(request, peer)
        finally:
            self._local.peer = None

    def take(self, other: LoopbackServer) -> None:
        """A reload: keep listening, answer with the new generation's lifecycle."""
        assert isinstance(other, _PerCaller)
        self._credentials, self._timeout = other._credentials, other._timeout

    def ask_with_token(self, token: str, rule: str) -> Granted | Reply:
        try:
            future = self._credentials.submit_token(token, rule, timeout=self._timeout)
            return future.result(self._timeout + 1.0)
        except WorkloadError as exc:
            code = _STATUS.get(exc.kind, 500)
            return _error(code, "AccessDenied" if code == 403 else "CredentialUnavailable",
                          exc.detail)
        except TimeoutError:
            return _error(503, "CredentialUnavailable", "no answer within the deadline")

    def ask(self, rule: str) -> Granted | Reply:
        peer: Peer | None = getattr(self._local, "peer", None)
        caller = tcp_caller(peer.sock) if peer is not None else None
        if caller is None:
            return _error(403, "AccessDenied", "the bridge cannot tell which process is "
                          "asking (it needs to see the caller's /proc/<pid>/fd)")
        try:
            return self._credentials.get_blocking(caller, rule, timeout=self._timeout)
        except WorkloadError as exc:
            code = _STATUS.get(exc.kind, 500)
            return _error(code, "AccessDenied" if code == 403 else "CredentialUnavailable",
                          exc.detail)
        finally:
            caller.close()


class WorkloadImdsServer(_PerCaller):
    """IMDSv2 (`metadata.imds`) for the one workload target that serves it."""

    endpoint = "imds"
    methods = ("GET", "PUT")

    def __init__(self, address: str, rule: WorkloadRule, *, credentials: WorkloadCredentials,
                 timeout: float, monotonic: Callable[[], float], metrics: Metrics | None,
                 allowed_uids: tuple[int, ...] | None) -> None:
        super().__init__(address, credentials=credentials, timeout=timeout, metrics=metrics,
                         allowed_uids=allowed_uids)
        self._rule = rule.name
        self._tokens = SessionTokens(monotonic)

    def take(self, other: LoopbackServer) -> None:
        super().take(other)
        assert isinstance(other, WorkloadImdsServer)
        self._rule = other._rule  # session tokens stay valid: same key

    def describe(self) -> str:
        return (f"IMDSv2 emulation on {self.url}/ for workload target {self._rule}: each "
                f"caller its own identity, to {self.readers()}")

    def handle(self, request: Request) -> Reply:
        if request.method == "PUT":
            return self._issue(request)
        token = request.headers.get(TOKEN_HEADER)
        if token is None or not self._tokens.valid(token):
            return text(401, "Unauthorized\n", refusal="token")
        if request.path in (CREDENTIALS_PATH, CREDENTIALS_PATH[:-1]):
            return text(200, self._rule)
        if request.path.startswith(CREDENTIALS_PATH):
            name = request.path[len(CREDENTIALS_PATH):]
            if name in (self._rule, self._rule + "/"):
                return self._credentials_reply()
        return text(404, "Not Found\n")

    def _issue(self, request: Request) -> Reply:
        """PUT /latest/api/token, as `clouds.aws.imds` answers it."""
        if request.path != TOKEN_PATH:
            return text(405, "method not allowed\n", headers=(("Allow", "GET"),))
        ttl = (request.headers.get(TTL_HEADER) or "").strip()
        if not (ttl.isascii() and ttl.isdigit() and len(ttl) <= 5 and 1 <= int(ttl) <= MAX_TTL):
            return text(400, f"{TTL_HEADER} must be 1..{MAX_TTL}\n")
        return text(200, self._tokens.issue(int(ttl)), headers=((TTL_HEADER, ttl),))

    def _credentials_reply(self) -> Reply:
        granted = self.ask(self._rule)
        if isinstance(granted, Reply):
            return granted
        credential = granted.status.credential
        if credential is None or not isinstance(credential.material, AwsCredentials):
            return _error(503, "CredentialUnavailable", "no valid credential right now")
        aws = credential.material
        return Reply(200, json.dumps({
            "Code": "Success", "LastUpdated": utc_iso(credential.issued_at),
            "Type": "AWS-HMAC", "AccessKeyId": aws.access_key_id,
            "SecretAccessKey": aws.secret_access_key, "Token": aws.session_token,
            "Expiration": utc_iso(credential.expires_at)}).encode(), "text/plain")


class WorkloadGceServer(_PerCaller):
    """GCE metadata (`metadata.gce`) for the one workload target that serves it: every
    answer about the account (its email, scopes, token) is the caller's own, rendered
    from the rule for its SPIFFE ID; the wire is `clouds.gcp.gce`'s, reused as is."""

    endpoint = "gce"

    def __init__(self, config: GceConfig, rule: WorkloadRule, *,
                 credentials: WorkloadCredentials, timeout: float,
                 now: Callable[[], float], metrics: Metrics | None) -> None:
        super().__init__(config.address, credentials=credentials, timeout=timeout,
                         metrics=metrics, allowed_uids=config.allowed_uids)
        self._config = config
        self._rule = rule
        self._now = now

    def take(self, other: LoopbackServer) -> None:
        super().take(other)
        assert isinstance(other, WorkloadGceServer)
        self._config, self._rule, self._now = other._config, other._rule, other._now

    def describe(self) -> str:
        return (f"GCE metadata emulation on {self.url} for workload target "
                f"{self._rule.name}: each caller its own identity, to {self.readers()}")

    def reply_headers(self) -> tuple[tuple[str, str], ...]:
        return (FLAVOR,)

    def precheck(self, request: Request) -> Reply | None:
        if request.path != "/" and request.single("Metadata-Flavor") != "Google":
            return text(403, "Missing required header: Metadata-Flavor: Google\n",
                        refusal="flavor")
        return None

    def handle(self, request: Request) -> Reply:
        path = request.path
        if not path.startswith(ACCOUNTS) and path != V1 + "project/project-id":
            # the ping, directory listings, universe: nobody's in particular
            assert self._rule.sample is not None
            return self._view(self._rule.sample, None).handle(request)
        granted = self.ask(self._rule.name)
        if isinstance(granted, Reply):
            return granted
        assert granted.target is not None
        return self._view(granted.target, granted.status).handle(request)

    def _view(self, target: TargetConfig, status: TargetStatus | None) -> GceServer:
        """`clouds.gcp.gce`'s answers for one caller's rendered target and status."""
        store = CredentialStore([target.name])
        if status is not None:
            store.seed(status)
        return GceServer(self._config, target, store=store, now=self._now)


class WorkloadContainerServer(_PerCaller):
    """The container provider (`metadata.container`): /v1/credentials/<workload target>,
    with the token file as its first gate, then the caller's own identity."""

    endpoint = "container"

    def __init__(self, address: str, rules: list[WorkloadRule], *, token_file: Path,
                 tokens: LocalTokens, credentials: WorkloadCredentials, timeout: float,
                 metrics: Metrics | None, allowed_uids: tuple[int, ...] | None) -> None:
        super().__init__(address, credentials=credentials, timeout=timeout, metrics=metrics,
                         allowed_uids=allowed_uids)
        self._rules = {r.name for r in rules}
        self._token_file = token_file
        self._tokens = tokens
        self._token = b""

    def listen_key(self) -> tuple[object, ...]:
        return (*super().listen_key(), self._token_file)

    def take(self, other: LoopbackServer) -> None:
        super().take(other)
        assert isinstance(other, WorkloadContainerServer)
        self._rules = other._rules  # the token file and its token stay

    def describe(self) -> str:
        return (f"AWS container credentials on {self.url}{PREFIX}<workload target> for "
                f"{', '.join(sorted(self._rules))}: each caller its own identity (token file "
                f"{self._token_file})")

    def bound(self) -> None:
        token = self._tokens.token_for(self._token_file)
        write_token_file(self._token_file, token)
        self._token = token.encode()

    def handle(self, request: Request) -> Reply:
        if not request.path.startswith(PREFIX):
            return text(404, "not found\n")
        presented = request.single("Authorization")
        if presented is None:
            return text(401, "missing Authorization\n", refusal="token")
        name = request.path[len(PREFIX):]
        if not hmac.compare_digest(presented.encode("latin-1", "replace"), self._token):
            # Broker-less: the caller's own JWT-SVID for the rule's audience (verified
            # there; any other token, or one for another audience, is refused).
            if presented.count(".") != 2 or name not in self._rules:
                return text(403, "wrong Authorization\n", refusal="token")
            granted = self.ask_with_token(presented, name)
            return granted if isinstance(granted, Reply) else _container_reply(granted)
        if name not in self._rules:
            return _error(404, "UnknownTarget", "this workload target is not served here")
        granted = self.ask(name)
        return granted if isinstance(granted, Reply) else _container_reply(granted)


def _container_reply(granted: Granted) -> Reply:
    credential = granted.status.credential
    if credential is None or not isinstance(credential.material, AwsCredentials):
        return _error(503, "CredentialUnavailable", "no valid credential right now")
    aws = credential.material
    final = granted.rule.sample.final if granted.rule.sample else None
    body: dict[str, str] = {
        "AccessKeyId": aws.access_key_id, "SecretAccessKey": aws.secret_access_key,
        "Token": aws.session_token, "Expiration": utc_iso(credential.expires_at)}
    if isinstance(final, AwsHopConfig):
        body["AccountId"] = final.role_arn.split(":")[4]
    return Reply(200, json.dumps(body).encode(), "application/json")


def _error(status: int, code: str, message: str) -> Reply:
    return json_reply(status, {"Code": code, "Message": message})
