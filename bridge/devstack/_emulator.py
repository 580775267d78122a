"""The lifecycle every loopback HTTP emulator shares. DEVELOPMENT ONLY.

An emulator owns one `LoopbackHttpServer` (`_http`) and one set of fault switches
(`faults`); starting, stopping (which also wakes any injected latency, so a test never
waits on a stopped server) and the context-manager protocol are the same for all.
"""

from __future__ import annotations

import ssl
import threading
from typing import Generic, TypeVar

from bridge.devstack._http import HttpRequest, HttpResponse, LoopbackHttpServer
from bridge.devstack._lifecycle import StartStop
from bridge.devstack.faults import FaultSwitches, HttpFailure

R = TypeVar("R")


class HttpEmulator(StartStop):
    def __init__(self, *, port: int, name: str, tls: ssl.SSLContext | None = None) -> None:
        """Create the (not yet listening) server on `port` (0: any), over TLS with
        `tls`, and the fault switches."""
        self.faults: FaultSwitches[HttpFailure] = FaultSwitches()
        self._http = LoopbackHttpServer(self.handle, port=port, name=name, tls=tls)

    def handle(self, request: HttpRequest) -> HttpResponse:
        """Answer one request (each emulator speaks its own protocol)."""
        raise NotImplementedError

    @property
    def url(self) -> str:
        """`http://127.0.0.1:<port>`.

        Raises:
            RuntimeError: never started and no port given.
        """
        return self._http.url

    @property
    def running(self) -> bool:
        """Whether the emulator is accepting connections."""
        return self._http.running

    def start(self) -> None:
        """Listen on 127.0.0.1 (the same port again after a restart).

        Raises:
            RuntimeError: already running.
        """
        self._http.start()

    def stop(self) -> None:
        """Stop listening (idempotent); callers then see the service as unreachable."""
        self.faults.interrupt()
        self._http.stop()



class RecordingEmulator(HttpEmulator, Generic[R]):
    """An emulator that keeps every request it received, for tests to inspect."""

    def __init__(self, *, port: int, name: str, tls: ssl.SSLContext | None = None) -> None:
        super().__init__(port=port, name=name, tls=tls)
        self._recorded_lock = threading.Lock()
        self._recorded: list[R] = []

    @property
    def requests(self) -> tuple[R, ...]:
        """Every request received so far, oldest first."""
        with self._recorded_lock:
            return tuple(self._recorded)

    def clear_requests(self) -> None:
        """Forget the recorded requests."""
        with self._recorded_lock:
            self._recorded.clear()

    def _record(self, request: R) -> None:
        with self._recorded_lock:
            self._recorded.append(request)
