"""gRPC for workloads: `GetCredential`/`WatchCredential` with `workload_target` answer
"my credential under rule R" on `workloads.grpc_socket`.

grpcio does not show a servicer its caller's `SO_PEERCRED`, so the socket is served by
an in-process hop (`bridge.relay`): each accepted connection's process is pinned
(`serving.processes.unix_caller`: pid, uid, pidfd, start time), then relayed to a gRPC
server on 127.0.0.1 whose peer address (the hop's own source port) names that caller.
A connection that did not come through the hop has no caller and is refused. The
caller's identity is the process that connected: a connection handed to another
process still asks as its connector, and once the connector has exited it gets
nothing (the pidfd says so).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import grpc

from bridge._proto.spiffebridge.v1 import credentials_pb2 as pb
from bridge._proto.spiffebridge.v1 import credentials_pb2_grpc as pb_grpc
from bridge.clouds import cloud_of
from bridge.config.workloads import WorkloadRule
from bridge.errors import ServingError
from bridge.metrics import Metrics
from bridge.relay import Opened, UnixRelay
from bridge.serving.grpc.callers import bearer
from bridge.serving.grpc.convert import ServedTarget, credential_message
from bridge.serving.processes import CallerProcess, unix_caller
from bridge.workloads.lifecycle import Granted, WorkloadCredentials, WorkloadError

log = logging.getLogger(__name__)
WATCH_PERIOD = 5.0  # a watcher is re-attested and re-read this often
_CODES = {
    "denied": grpc.StatusCode.PERMISSION_DENIED,
    "not_found": grpc.StatusCode.NOT_FOUND,
    "unavailable": grpc.StatusCode.UNAVAILABLE,
    "timeout": grpc.StatusCode.DEADLINE_EXCEEDED,
    "exhausted": grpc.StatusCode.RESOURCE_EXHAUSTED,
    "failed": grpc.StatusCode.FAILED_PRECONDITION,
}


class WorkloadGrpcService:
    """The workload socket (a `serving.Service`)."""

    def __init__(self, socket: str, *, mode: int, rules: Sequence[WorkloadRule],
                 credentials: WorkloadCredentials, metrics: Metrics, request_timeout: float,
                 now: Callable[[], float]) -> None:
        self._path = Path(socket.removeprefix("unix://").removeprefix("unix:"))
        self._mode = mode
        self._rules = {r.name: r for r in rules if r.serve_grpc}
        self._credentials = credentials
        self._metrics = metrics
        self._timeout = request_timeout
        self._now = now
        self._callers: dict[int, CallerProcess] = {}
        self._lock = threading.Lock()
        self._port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self._relay: UnixRelay | None = None

    def describe(self) -> str:
        return (f"workload gRPC on unix://{self._path} (mode {self._mode:04o}) for "
                f"{', '.join(self._rules) or 'no rule'}")

    def adopt(self, other: object) -> bool:
        """A reload: keep the socket (no gap, nobody else can take the path) and answer
        with the new generation's rules and lifecycle."""
        if not isinstance(other, WorkloadGrpcService) or self._relay is None or (
                other._path, other._mode) != (self._path, self._mode):
            return False
        self._rules, self._credentials = other._rules, other._credentials
        self._timeout, self._now = other._timeout, other._now
        return True

    def start(self) -> None:
        self._thread = threading.Thread(target=self._main, name="workload-grpc", daemon=True)
        self._thread.start()
        self._ready.wait(30)
        if self._error is not None:
            raise ServingError(f"cannot serve workloads on unix://{self._path}: "
                               f"{self._error}", reason="grpc")
        self._path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        self._relay = UnixRelay(str(self._path), upstream=self._open, mode=self._mode,
                                name="workload-grpc-hop")
        try:
            self._relay.start()
        except OSError as exc:
            self.stop()
            raise ServingError(f"cannot listen on unix://{self._path}: {exc}",
                               reason="grpc") from exc

    def stop(self) -> None:
        if self._relay is not None:
            self._relay.stop()
            self._relay = None
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(stop.set)
        if self._thread is not None:
            self._thread.join(timeout=15)
            self._thread = None
        with self._lock:
            callers, self._callers = list(self._callers.values()), {}
        for caller in callers:
            caller.close()

    # -- the hop ------------------------------------------------------------------------

    async def _open(self, sock: Any) -> Opened | None:
        caller = unix_caller(sock)
        if caller is None:
            return None
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", self._port)
        except OSError:
            caller.close()
            raise
        port = int(writer.get_extra_info("sockname")[1])
        with self._lock:
            self._callers[port] = caller

        def closed() -> None:
            with self._lock:
                if self._callers.get(port) is caller:
                    del self._callers[port]
            caller.close()

        return Opened(reader, writer, closed)

    def _caller(self, context: grpc.aio.ServicerContext) -> CallerProcess | None:
        peer = str(context.peer())  # ipv4:127.0.0.1:PORT for every hop connection
        if not peer.startswith("ipv4:127.0.0.1:"):
            return None
        try:
            port = int(peer.rsplit(":", 1)[1])
        except ValueError:
            return None
        with self._lock:
            return self._callers.get(port)

    # -- the server ---------------------------------------------------------------------

    def _main(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._serve())
        except BaseException as exc:
            self._error = exc
        finally:
            self._ready.set()
            loop.close()

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        server = grpc.aio.server(options=[("grpc.max_receive_message_length", 64 * 1024),
                                          ("grpc.so_reuseport", 0)])
        pb_grpc.add_CredentialServiceServicer_to_server(_Servicer(self), server)
        self._port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            await server.stop(1.0)

    async def answer(self, rule: str, context: grpc.aio.ServicerContext,
                     timeout: float | None = None) -> Granted:
        """The caller's own credential under `rule` (runs the lifecycle on the daemon's
        loop). Raises WorkloadError."""
        if rule not in self._rules:
            raise WorkloadError(f"no workload target {rule!r} is served over gRPC",
                                kind="not_found", reason="no_rule")
        left = context.time_remaining()
        wait = min(self._timeout, left) if left is not None else self._timeout
        token = bearer(context.invocation_metadata())
        if token:  # broker-less: the caller's own JWT-SVID for the rule's audience
            return await asyncio.wrap_future(
                self._credentials.submit_token(token, rule, timeout=timeout or wait))
        caller = self._caller(context)
        if caller is None:
            raise WorkloadError("the caller did not come through the workload socket",
                                kind="denied", reason="no_caller")
        future = self._credentials.submit(caller, rule, timeout=timeout or wait)
        return await asyncio.wrap_future(future)

    def message(self, granted: Granted) -> pb.Credential:
        rule = granted.rule
        assert rule.sample is not None
        cloud = cloud_of(rule.sample.final)
        served = ServedTarget(name=rule.name, allowed_callers=(),
                              proto_cloud=cloud.proto_cloud, proto_field=cloud.proto_field)
        message = credential_message(served, granted.status, self._now())
        message.spiffe_id = granted.spiffe_id
        return message

    def count(self, method: str, code: grpc.StatusCode) -> None:
        self._metrics.grpc_requests.labels(method, code.name).inc()


class _Servicer(pb_grpc.CredentialServiceServicer):  # type: ignore[misc]
    def __init__(self, service: WorkloadGrpcService) -> None:
        self._service = service

    async def ListTargets(  # noqa: N802 - named by the proto
            self, request: pb.ListTargetsRequest, context: grpc.aio.ServicerContext,
    ) -> pb.ListTargetsResponse:
        await self._abort(context, "ListTargets", grpc.StatusCode.UNIMPLEMENTED,
                          "the workload socket answers GetCredential and WatchCredential "
                          "with `workload_target`")
        raise AssertionError("abort raises")

    async def GetCredential(  # noqa: N802 - named by the proto
            self, request: pb.GetCredentialRequest, context: grpc.aio.ServicerContext,
    ) -> pb.GetCredentialResponse:
        granted = await self._granted("GetCredential", request, context)
        message = self._service.message(granted)
        self._service.count("GetCredential", grpc.StatusCode.OK)
        return pb.GetCredentialResponse(credential=message)

    async def WatchCredential(  # noqa: N802 - named by the proto
            self, request: pb.WatchCredentialRequest, context: grpc.aio.ServicerContext,
    ) -> Any:
        last: pb.Credential | None = None
        while True:
            granted = await self._granted("WatchCredential", request, context)
            message = self._service.message(granted)
            if message != last:
                last = message
                yield pb.WatchCredentialResponse(credential=message)
            await asyncio.sleep(WATCH_PERIOD)  # re-attested each time: exits end it

    async def _granted(self, method: str, request: Any,
                       context: grpc.aio.ServicerContext) -> Granted:
        if request.target or not request.workload_target:
            await self._abort(context, method, grpc.StatusCode.INVALID_ARGUMENT,
                              "the workload socket serves `workload_target`, not `target`")
        try:
            return await self._service.answer(request.workload_target, context)
        except WorkloadError as exc:
            await self._abort(context, method, _CODES.get(exc.kind, grpc.StatusCode.INTERNAL),
                              exc.detail)
            raise  # not reached: abort raises

    async def _abort(self, context: grpc.aio.ServicerContext, method: str,
                     code: grpc.StatusCode, details: str) -> None:
        self._service.count(method, code)
        if code is grpc.StatusCode.PERMISSION_DENIED:
            log.info("%s denied: %s", method, details)
        await context.abort(code, details)


__all__ = ["WorkloadGrpcService"]
