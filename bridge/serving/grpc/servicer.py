"""`spiffebridge.v1.CredentialService`: reads the store, decides who may read what.

Every answer comes from the in-memory store; a reader never triggers an exchange. A
target with `allowed_callers` needs the caller's JWT-SVID (see `callers`); one without
is open to whoever can reach the socket. Denials carry a reason and never material.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any, TypeVar

import grpc

from bridge._proto.spiffebridge.v1 import credentials_pb2 as pb
from bridge._proto.spiffebridge.v1 import credentials_pb2_grpc as pb_grpc
from bridge.metrics import Metrics
from bridge.model import TargetStatus
from bridge.serving.grpc.access import Access, Refusal, Refused
from bridge.serving.grpc.callers import CallerVerifier, bearer
from bridge.serving.grpc.changes import Changes
from bridge.serving.grpc.convert import ServedTarget, credential_message, target_message

log = logging.getLogger(__name__)
R = TypeVar("R")
REAUTHORIZE = 1.0  # seconds: an open stream re-checks its caller at least this often
# methods that return their response serialized, for the server to send as they are
RAW_RESPONSES = frozenset({
    f"/{pb.DESCRIPTOR.services_by_name['CredentialService'].full_name}/GetCredential"})
_CODES = {Refusal.NOT_FOUND: grpc.StatusCode.NOT_FOUND,
          Refusal.UNAUTHENTICATED: grpc.StatusCode.UNAUTHENTICATED,
          Refusal.PERMISSION_DENIED: grpc.StatusCode.PERMISSION_DENIED,
          Refusal.UNAVAILABLE: grpc.StatusCode.UNAVAILABLE}


class Denied(Exception):  # noqa: N818 - carries a status code, like grpc's own
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details


class CredentialServicer(pb_grpc.CredentialServiceServicer):  # type: ignore[misc]
    def __init__(self, targets: Mapping[str, ServedTarget], *,
                 status: Callable[[str], TargetStatus | None], now: Callable[[], float],
                 verifier: CallerVerifier, metrics: Metrics, changes: Changes,
                 max_watchers: int, max_unary: int = 256) -> None:
        self._targets = dict(targets)
        self._access = Access(self._targets, verifier)
        self._status = status
        self._now = now
        self._metrics = metrics
        self._changes = changes
        self._max_watchers = max_watchers
        self._watchers = 0
        self._max_unary = max_unary  # unary calls being answered (streams count apart)
        self._in_unary = 0
        self._responses: dict[str, tuple[TargetStatus, float, bytes]] = {}
        self._counters: dict[object, Any] = {}  # labels() once per method and code

    def reconfigure(self, targets: Mapping[str, ServedTarget], verifier: CallerVerifier) -> None:
        """Serve `targets` from now on (a reload that kept the listener). Call on the
        server's loop; a call in flight finishes against what it started with."""
        self._targets = dict(targets)
        self._access = Access(self._targets, verifier)
        self._responses.clear()
        self._changes.track(self._targets)

    async def ListTargets(  # noqa: N802 - named by the proto
            self, request: pb.ListTargetsRequest, context: grpc.aio.ServicerContext,
    ) -> pb.ListTargetsResponse:
        def listing() -> pb.ListTargetsResponse:
            caller = self._caller(context, required=False)
            now = self._now()
            visible = [self._targets[n] for n in self._targets
                       if self._access.may_read(n, caller)]
            return pb.ListTargetsResponse(targets=[
                target_message(t, self._current(t.name), now) for t in visible])
        return await self._unary("ListTargets", context, listing)

    async def GetCredential(  # noqa: N802 - named by the proto
            self, request: pb.GetCredentialRequest, context: grpc.aio.ServicerContext,
    ) -> bytes:
        """The serialized response (the server registers this method with raw responses):
        one serialization per store value, and no closure or extra coroutine per call."""
        if self._in_unary >= self._max_unary:
            await self._abort(context, "GetCredential", self._exhausted())
        self._in_unary += 1
        try:
            self._authorize(request.target, context)
            body = self._deliverable(request.target)
        except Denied as exc:
            await self._abort(context, "GetCredential", exc)
        finally:
            self._in_unary -= 1
        self._count("GetCredential", grpc.StatusCode.OK)
        return body

    async def WatchCredential(  # noqa: N802 - named by the proto
            self, request: pb.WatchCredentialRequest, context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[pb.WatchCredentialResponse]:
        try:
            self._authorize(request.target, context)
            self._admit_watcher()
        except Denied as exc:
            await self._abort(context, "WatchCredential", exc)
        self._watchers += 1
        ended: Denied | None = None
        try:
            async for message in self._updates(request.target, context):
                yield pb.WatchCredentialResponse(credential=message)
        except Denied as exc:  # the caller's authorization no longer holds
            ended = exc
        finally:
            self._watchers -= 1
            if ended is None:
                self._count("WatchCredential", grpc.StatusCode.OK)
        if ended is not None:
            await self._abort(context, "WatchCredential", ended)

    async def _updates(self, name: str,
                       context: grpc.aio.ServicerContext) -> AsyncIterator[pb.Credential]:
        """The current value, then each change; wakes at expiry even if nothing else does.

        Authorization is checked again before every message and at least every
        `REAUTHORIZE` seconds: a caller whose SVID expired, whose signing key left the
        bundle, or who left `allowed_callers` in a reload gets no further message, and
        its stream ends (UNAUTHENTICATED / PERMISSION_DENIED; NOT_FOUND for a target a
        reload removed). Its SVID is re-verified from the verdict cache, which forgets a
        token at its `exp` and on every bundle change."""
        last: pb.Credential | None = None
        while not self._changes.closed:
            changed = self._changes.event(name)
            self._authorize(name, context)
            status = self._current(name)
            now = self._now()
            message = credential_message(self._targets[name], status, now)
            if message != last:
                last = message
                yield message
            valid = status.valid_credential(now)
            timeout = REAUTHORIZE if valid is None else min(
                REAUTHORIZE, max(0.0, valid.remaining(now)) + 0.01)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):  # not wait_for (gh-86296)
                    await changed.wait()

    async def _unary(self, method: str, context: grpc.aio.ServicerContext,
                     answer: Callable[[], R]) -> R:
        """`answer()`, counted; a denial aborts the call with its code. The call holds a
        unary slot only now that its request has arrived (see server.py)."""
        if self._in_unary >= self._max_unary:
            await self._abort(context, method, self._exhausted())
        self._in_unary += 1
        try:
            response = answer()
        except Denied as exc:
            await self._abort(context, method, exc)
        finally:
            self._in_unary -= 1
        self._count(method, grpc.StatusCode.OK)
        return response

    def _exhausted(self) -> Denied:
        return Denied(grpc.StatusCode.RESOURCE_EXHAUSTED,
                      f"{self._max_unary} calls in progress already (grpc.max_concurrent_rpcs)")

    def _deliverable(self, name: str) -> bytes:
        """The serialized response for a valid credential, built once per store value and
        kept only until that credential's hand-out deadline: statuses are immutable and
        replaced whole, so the same status object means nothing has changed."""
        status = self._current(name)
        now = self._now()
        cached = self._responses.get(name)
        if cached is not None and cached[0] is status and now < cached[1]:
            return cached[2]
        valid = status.valid_credential(now)
        if valid is None:
            raise Denied(grpc.StatusCode.UNAVAILABLE,
                         f"target {name!r} has no valid credential right now (expired, or "
                         "not yet delivered); retry later")
        body: bytes = pb.GetCredentialResponse(
            credential=credential_message(self._targets[name], status, now)).SerializeToString()
        self._responses[name] = (status, valid.deadline, body)
        return body

    def _admit_watcher(self) -> None:
        if self._watchers >= self._max_watchers:
            raise Denied(grpc.StatusCode.RESOURCE_EXHAUSTED,
                         f"{self._max_watchers} watchers already (grpc.max_watchers)")

    def _current(self, name: str) -> TargetStatus:
        status = self._status(name)
        if status is None:  # the store knows every configured target
            raise Denied(grpc.StatusCode.NOT_FOUND, f"no target named {name!r}")
        return status

    def _authorize(self, name: str, context: grpc.aio.ServicerContext) -> None:
        if name in self._access.open:  # no need to look at the caller's headers
            return
        try:
            self._access.authorize(name, bearer(context.invocation_metadata()))
        except Refused as exc:
            raise Denied(_CODES[exc.refusal], exc.detail) from exc

    def _caller(self, context: grpc.aio.ServicerContext, *, required: bool) -> str | None:
        """The caller's verified SPIFFE ID; None when it sent no SVID and none is needed."""
        try:
            return self._access.caller(bearer(context.invocation_metadata()),
                                       required=required)
        except Refused as exc:
            raise Denied(_CODES[exc.refusal], exc.detail) from exc

    async def _abort(self, context: grpc.aio.ServicerContext, method: str,
                     denied: Denied) -> Any:
        self._count(method, denied.code)
        if denied.code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
            log.info("%s denied: %s", method, denied.details)
        await context.abort(denied.code, denied.details)

    def _count(self, method: str, code: grpc.StatusCode) -> None:
        key = method if code is grpc.StatusCode.OK else (method, code)  # OK: no Enum hash
        counter = self._counters.get(key)
        if counter is None:
            counter = self._counters[key] = self._metrics.grpc_requests.labels(
                method, code.name)
        counter.inc()
