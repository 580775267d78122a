"""The reader socket: a target's credential files, rendered from memory, over HTTP/1.1
on a unix socket beside the gRPC one.

`credential-process` runs once per SDK session, and the aws CLI runs it per command: a
gRPC client costs it grpc, asyncio and protobuf at start (10x a bare interpreter). A
stdlib client of this socket costs a connect and one request. What it serves is exactly
what the credential directory holds (`GET /v1/files/aws/<target>.json`), decided by the
same `Access` as the gRPC API (a caller's JWT-SVID in `Authorization: Bearer`), and only
while the credential is valid: 503 otherwise, never an expired one.

The socket is created under umask 077, then opened to the gRPC socket's mode, in the
gRPC socket's directory: file permissions are the first gate, as for gRPC.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from bridge.errors import ServingError
from bridge.model import TargetStatus
from bridge.outputs.files import TargetFile
from bridge.readersocket import PREFIX
from bridge.serving import activation
from bridge.serving.bounded import BoundedServer, Peer
from bridge.serving.grpc.access import Access, Refusal, Refused
from bridge.serving.grpc.callers import bearer_value
from bridge.serving.http1 import Reply, Request
from bridge.serving.sockets import remove_stale

_STATUS = {Refusal.NOT_FOUND: 404, Refusal.UNAUTHENTICATED: 401,
           Refusal.PERMISSION_DENIED: 403, Refusal.UNAVAILABLE: 503}


class ReaderServer(BoundedServer):
    """A `Service` on a unix socket (the HTTP listeners' bounds and strict parser)."""

    name = "reader"

    def __init__(self, path: Path, mode: int, files: Mapping[str, Sequence[TargetFile]], *,
                 access: Access, status: Callable[[str], TargetStatus | None],
                 now: Callable[[], float]) -> None:
        super().__init__("", 0, max_connections=64)
        self.path = path
        self._mode = mode
        self._files = {f.path: (name, f.render) for name, fs in files.items() for f in fs
                       if f.render is not None}
        self._access = access
        self._status = status
        self._now = now
        self._passed = False

    def start(self) -> None:
        self.path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        passed = activation.take_unix(self.path)
        if passed is not None:  # systemd's (socket activation): served, never unlinked
            self._passed = True
            self.use_listener(passed)
            self.serve()
            return
        remove_stale(self.path, key="grpc.socket", reason="reader")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            old = os.umask(0o077)
            try:
                sock.bind(str(self.path))
            finally:
                os.umask(old)
            os.chmod(self.path, self._mode)
            sock.listen(256)
            sock.setblocking(False)
        except OSError as exc:
            sock.close()
            raise ServingError(f"cannot listen on unix://{self.path}: {exc.strerror}",
                               reason="reader") from exc
        self.use_listener(sock)
        self.serve()

    def stop(self) -> None:
        self.close()
        if not self._passed:
            with contextlib.suppress(OSError, ServingError):
                remove_stale(self.path, key="grpc.socket", reason="reader", live_check=False)

    def adopt(self, other: object) -> bool:
        """Serve `other`'s targets if it listens on the same path (a reload)."""
        if not isinstance(other, ReaderServer) or (other.path, other._mode) != (
                self.path, self._mode):
            return False
        self._files, self._access = other._files, other._access
        self._status, self._now = other._status, other._now
        return True

    def describe(self) -> str:
        return f"credential files on unix://{self.path}"

    def respond(self, request: Request, peer: Peer) -> Reply:
        if request.method != "GET":
            return Reply(405, b"method not allowed\n", headers=(("Allow", "GET"),))
        found = self._files.get(request.path.removeprefix(PREFIX)) if (
            request.path.startswith(PREFIX)) else None
        token = bearer_value(request.single("Authorization"))
        access = self._access
        name, render = found if found is not None else ("", None)  # "": like an unknown target
        try:
            access.authorize(name, token)
        except Refused as exc:
            return Reply(_STATUS[exc.refusal], f"{exc.detail}\n".encode(),
                         refusal=exc.refusal.value)
        status = self._status(name)
        valid = status.valid_credential(self._now()) if status is not None else None
        if valid is None or render is None:
            return Reply(503, f"target {name!r} has no valid credential right now\n".encode(),
                         headers=(("Retry-After", "1"),))
        return Reply(200, render(valid), "application/json")

