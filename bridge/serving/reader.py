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
import stat
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from bridge.errors import ServingError
from bridge.model import TargetStatus
from bridge.outputs.files import TargetFile
from bridge.readersocket import PREFIX
from bridge.serving.bounded import BoundedServer, Peer
from bridge.serving.grpc.access import Access, Refusal, Refused
from bridge.serving.http1 import Reply, Request

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

    def start(self) -> None:
        self.path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        _remove_stale(self.path)
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
        with contextlib.suppress(OSError, ServingError):
            _remove_stale(self.path, live_check=False)

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
        token = _bearer(request.single("Authorization"))
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


def _bearer(value: str | None) -> str:
    scheme, _, token = (value or "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def _remove_stale(path: Path, *, live_check: bool = True) -> None:
    """Remove a socket a previous run left; refuse to delete anything else, or a socket
    another process still answers on."""
    try:
        st = path.lstat()
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise ServingError(f"{path} exists and is not a socket: refusing to replace it",
                           reason="reader")
    if live_check and _answers(path):
        raise ServingError(f"another process answers on unix://{path}: refusing to take "
                           "it over (is another bridge running with this grpc.socket?)",
                           reason="reader")
    path.unlink(missing_ok=True)


def _answers(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(0.5)
        try:
            probe.connect(str(path))
        except OSError:
            return False
    return True
