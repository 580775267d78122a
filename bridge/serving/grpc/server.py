"""The gRPC server: CredentialService plus standard health checking and reflection.

It runs on its own thread and event loop, so a flood of readers cannot delay a refresh
and a slow refresh cannot stall a reader. The unix socket is created under umask 077
and then opened up to `socket_mode`, so it is never wider than asked, even briefly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import socket
import tempfile
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2_grpc

from bridge._proto.spiffebridge.v1 import credentials_pb2 as pb
from bridge._proto.spiffebridge.v1 import credentials_pb2_grpc as pb_grpc
from bridge.errors import ServingError
from bridge.metrics import Metrics
from bridge.relay import Opened, UnixRelay
from bridge.serving import activation
from bridge.serving.grpc.callers import CallerVerifier
from bridge.serving.grpc.changes import Changes
from bridge.serving.grpc.convert import ServedTarget
from bridge.serving.grpc.receive import Deadlined
from bridge.serving.grpc.servicer import RAW_RESPONSES, CredentialServicer
from bridge.serving.health import is_ready
from bridge.serving.sockets import remove_stale
from bridge.store import CredentialStore

log = logging.getLogger(__name__)
SERVICE = pb.DESCRIPTOR.services_by_name["CredentialService"].full_name
START_TIMEOUT = 30.0
_OPTIONS = [
    ("grpc.max_receive_message_length", 64 * 1024),  # requests are a target name
    ("grpc.max_metadata_size", 32 * 1024),           # room for one JWT-SVID
    ("grpc.so_reuseport", 0),                        # a second bridge must fail to bind
    ("grpc.max_concurrent_streams", 128),            # calls open at once per connection
]


class GrpcSettings(Protocol):
    """What the server reads of its config (`bridge.config.GrpcConfig`)."""

    @property
    def socket(self) -> str: ...

    @property
    def socket_mode(self) -> int: ...

    @property
    def tcp_address(self) -> str | None: ...

    @property
    def max_concurrent_rpcs(self) -> int: ...

    @property
    def max_watchers(self) -> int: ...

    @property
    def shutdown_grace(self) -> float: ...


class GrpcService:
    """A `Service`: start() returns once the socket accepts calls."""

    def __init__(self, config: GrpcSettings, targets: Sequence[ServedTarget], *,
                 store: CredentialStore, now: Callable[[], float], verifier: CallerVerifier,
                 metrics: Metrics) -> None:
        self._config = config
        self._targets = {t.name: t for t in targets}
        self._store = store
        self._now = now
        self._verifier = verifier
        self._metrics = metrics
        self._path = Path(urlsplit(config.socket).path)
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._servicer: CredentialServicer | None = None
        self._health_pending = False
        self._relays: list[UnixRelay] = []
        self._private: Path | None = None  # behind relays: grpc's own sockets
        self._bound_path = False  # grpc.socket is ours to remove (not systemd's)
        self.tcp_port: int | None = None

    def describe(self) -> str:
        tcp = f" and {self._config.tcp_address.rpartition(':')[0]}:{self.tcp_port}" if (
            self._config.tcp_address) else ""
        return f"gRPC API on unix://{self._path}{tcp}"

    def start(self) -> None:
        self._thread = threading.Thread(target=self._main, name="grpc", daemon=True)
        self._thread.start()
        if not self._ready.wait(START_TIMEOUT):
            raise ServingError(f"the gRPC server did not start within {START_TIMEOUT:.0f}s",
                               reason="grpc")
        if self._error is not None:
            raise self._error

    def stop(self) -> None:
        loop, stop, thread = self._loop, self._stop, self._thread
        if loop is not None and stop is not None:
            with contextlib.suppress(RuntimeError):  # already stopped
                loop.call_soon_threadsafe(stop.set)
        if thread is not None:
            thread.join(self._config.shutdown_grace + 5.0)

    def adopt(self, other: object) -> bool:
        """Take over `other`'s targets and caller checks if it would listen exactly as
        this one does (a reload): the socket stays open, no client sees a gap."""
        if not isinstance(other, GrpcService) or _listening(other._config) != _listening(
                self._config) or other._store is not self._store:
            return False
        self._targets, self._verifier = other._targets, other._verifier
        loop, servicer = self._loop, self._servicer
        if loop is not None and servicer is not None:
            done = threading.Event()

            def swap() -> None:
                servicer.reconfigure(other._targets, other._verifier)
                done.set()
            with contextlib.suppress(RuntimeError):  # the server has stopped meanwhile
                loop.call_soon_threadsafe(swap)
                done.wait(START_TIMEOUT)
        return True

    def _main(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._serve())
        except BaseException as exc:
            if not self._ready.is_set():
                self._error = exc
            else:
                log.exception("the gRPC server failed")
        finally:
            self._ready.set()
            loop.close()

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        # No grpc-wide `maximum_concurrent_rpcs`: grpc counts a call from its headers, so
        # callers that send headers and never a request message (no SVID needed for that)
        # would hold every slot. The servicer keeps the budgets instead, counted once a
        # call has its request: unary calls (`max_concurrent_rpcs`) apart from streams
        # (`max_watchers`). A half-open call costs an HTTP/2 stream (capped per
        # connection) for at most about RECEIVE_DEADLINE seconds.
        server = grpc.aio.server(options=_OPTIONS)
        deadlined = Deadlined(server, raw_responses=RAW_RESPONSES)
        health_servicer = health.aio.HealthServicer()
        changes = Changes(asyncio.get_running_loop(), self._targets,
                          on_change=lambda: self._health_changed(health_servicer))
        self._servicer = CredentialServicer(
            self._targets, status=self._store.get, now=self._now, verifier=self._verifier,
            metrics=self._metrics, changes=changes, max_watchers=self._config.max_watchers,
            max_unary=self._config.max_concurrent_rpcs)
        pb_grpc.add_CredentialServiceServicer_to_server(self._servicer, deadlined)
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, deadlined)
        reflection_pb2_grpc.add_ServerReflectionServicer_to_server(  # as generic, too
            reflection.aio.ReflectionServicer(
                (SERVICE, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                 reflection.SERVICE_NAME)), deadlined)
        try:
            self._bind(server)
            await server.start()
            for relay in self._relays:
                await asyncio.to_thread(relay.start)
        except BaseException:
            for relay in self._relays:
                relay.stop()
            self._unlink()
            raise
        await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
        self._store.subscribe(changes.notify)
        self._update_health(health_servicer)
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            changes.close()
            await health_servicer.enter_graceful_shutdown()
            await server.stop(self._config.shutdown_grace)
            for relay in self._relays:
                await asyncio.to_thread(relay.stop)
            self._unlink()

    def _bind(self, server: grpc.aio.Server) -> None:
        path = self._path
        path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        passed = activation.take_unix(path)
        if passed is not None:  # systemd holds it: served through a relay, never unlinked
            self._relay_to(server, passed, "api")
        else:
            remove_stale(path, key="grpc.socket", reason="grpc", live_check=False)
            self._bound_path = True
            try:
                server.add_insecure_port(f"unix:{path}")
            except RuntimeError as exc:
                raise ServingError(f"cannot listen on unix://{path}: {exc}",
                                   reason="grpc") from exc
            os.chmod(path, self._config.socket_mode)
        if address := self._config.tcp_address:
            host, _, port = address.rpartition(":")
            passed = activation.take(host, int(port))  # the config checked HOST:PORT
            if passed is not None:
                self.tcp_port = int(passed.getsockname()[1])
                self._relay_to(server, passed, "tcp")
                return
            try:
                self.tcp_port = server.add_insecure_port(address)
            except RuntimeError as exc:
                raise ServingError(f"cannot listen on {address}: {exc}", reason="grpc") from exc

    def _relay_to(self, server: grpc.aio.Server, passed: socket.socket, name: str) -> None:
        """Serve a socket systemd passed (grpcio cannot adopt a descriptor): grpc listens
        on a private socket in a 0700 directory (beside grpc.socket, else in the temp
        directory: PrivateTmp in the unit), and a relay accepts on
        the passed one and copies bytes to it. Callers are judged by their SVIDs, which
        the relay passes through untouched."""
        if self._private is None:
            try:
                self._private = Path(tempfile.mkdtemp(prefix=".grpc-", dir=self._path.parent))
            except PermissionError:  # systemd made that directory, root's: the temp dir
                self._private = Path(tempfile.mkdtemp(prefix="spiffe-bridge-grpc-"))
        inner = str(self._private / f"{name}.sock")
        try:
            server.add_insecure_port(f"unix:{inner}")
        except RuntimeError as exc:
            raise ServingError(f"cannot listen on unix://{inner}: {exc}", reason="grpc") from exc

        async def connect(_caller: object) -> Opened:
            reader, writer = await asyncio.open_unix_connection(inner)
            return Opened(reader, writer)
        self._relays.append(UnixRelay(inner, upstream=connect, name=f"grpc-{name}-relay",
                                      listening=passed))

    def _unlink(self) -> None:
        """Remove what this server made: the private directory behind relays, and
        grpc.socket when it bound it (a passed one is systemd's)."""
        if self._private is not None:
            shutil.rmtree(self._private, ignore_errors=True)
            self._private = None
        if self._bound_path:
            self._bound_path = False
            remove_stale(self._path, key="grpc.socket", reason="grpc", live_check=False)

    def _health_changed(self, servicer: health.aio.HealthServicer) -> None:
        """Coalesce a burst of store changes (1,000 targets refreshing) into one check."""
        if not self._health_pending:
            self._health_pending = True
            asyncio.get_running_loop().call_soon(self._update_health, servicer)

    def _update_health(self, servicer: health.aio.HealthServicer) -> None:
        self._health_pending = False
        ready = is_ready(self._store.snapshot(), self._now())
        status = (health_pb2.HealthCheckResponse.SERVING if ready
                  else health_pb2.HealthCheckResponse.NOT_SERVING)
        task = asyncio.get_running_loop().create_task(servicer.set(SERVICE, status))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _listening(config: GrpcSettings) -> tuple[object, ...]:
    """What a running server cannot change without re-binding."""
    return (config.socket, config.socket_mode, config.tcp_address, config.max_concurrent_rpcs,
            config.max_watchers, config.shutdown_grace)
