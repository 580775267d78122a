"""The dev stack (fake Workload API, OIDC issuer, AWS STS and GCP emulators) in its own
process, so the emulators' CPU (minting and verifying ES256 tokens, XML) never shares a
GIL with what is measured. Driven over a pipe: set latency, read call counts, stop.

The child exits when told to or when the pipe closes (the parent died): bounded.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import multiprocessing.connection
from pathlib import Path
from typing import Any

FETCH = "FetchJWTSVID"
WEB_IDENTITY = "AssumeRoleWithWebIdentity"


def _child(conn: multiprocessing.connection.Connection, workdir: str, workers: int) -> None:
    import logging

    from bridge.devstack import DEMO_ROLE_ARN, DevStack, WorkloadApiServer, _http

    logging.basicConfig(level=logging.ERROR)
    # The emulators' stdlib server listens with socketserver's backlog of 5 and closes
    # every connection after one request: 32 concurrent clients overflow it (resets).
    # Bench capacity only; the daemon's behaviour is not what this changes.
    _http._Server.request_queue_size = 128
    stack = DevStack(Path(workdir))
    # One FetchJWTBundles stream holds a worker for good: room for the daemon's whole
    # refresh concurrency plus the streams.
    stack.workload = WorkloadApiServer(stack.authority, stack.workload_socket_path,
                                       identities=(f"spiffe://{stack.trust_domain}/demo",),
                                       max_workers=workers)
    stack.start()
    try:
        conn.send({"workload_socket": stack.workload_socket_uri, "aws_sts_url": stack.aws_sts_url,
                   "gcp_sts_url": stack.gcp_sts_url, "gcp_iam_url": stack.gcp_iam_url,
                   "role_arn": DEMO_ROLE_ARN, "trust_domain": stack.trust_domain})
        while True:
            try:
                command, args = conn.recv()
            except (EOFError, OSError):
                return
            if command == "stop":
                conn.send(None)
                return
            if command == "latency":
                (seconds,) = args
                stack.workload.faults.set_latency(seconds, operation=FETCH)
                stack.aws.faults.set_latency(seconds, operation=WEB_IDENTITY)
                conn.send(None)
            elif command == "calls":
                conn.send({FETCH: stack.workload.faults.calls(FETCH),
                           WEB_IDENTITY: stack.aws.faults.calls(WEB_IDENTITY)})
            elif command == "reset_calls":
                # reset() also forgets latency: put it back.
                latency = args[0]
                stack.workload.faults.reset()
                stack.aws.faults.reset()
                if latency:
                    stack.workload.faults.set_latency(latency, operation=FETCH)
                    stack.aws.faults.set_latency(latency, operation=WEB_IDENTITY)
                conn.send(None)
            else:
                conn.send(ValueError(f"unknown command {command}"))
    finally:
        stack.stop()


class StackProcess:
    def __init__(self, workdir: Path, *, workers: int = 64) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._process = ctx.Process(target=_child, args=(child, str(workdir), workers),
                                    daemon=True, name="bench-devstack")
        self.info: dict[str, Any] = {}

    def start(self) -> StackProcess:
        self._process.start()
        if not self._conn.poll(60):
            raise RuntimeError("the dev stack process did not start within 60 s")
        self.info = self._conn.recv()
        return self

    @property
    def pid(self) -> int:
        assert self._process.pid is not None
        return self._process.pid

    def _call(self, command: str, *args: Any) -> Any:
        self._conn.send((command, args))
        if not self._conn.poll(30):
            raise RuntimeError(f"the dev stack did not answer {command}")
        answer = self._conn.recv()
        if isinstance(answer, Exception):
            raise answer
        return answer

    def set_latency(self, seconds: float) -> None:
        """Added latency on every FetchJWTSVID and AssumeRoleWithWebIdentity call."""
        self._call("latency", seconds)

    def calls(self) -> dict[str, int]:
        return dict(self._call("calls"))

    def reset_calls(self, latency: float = 0.0) -> None:
        self._call("reset_calls", latency)

    def stop(self) -> None:
        if self._process.is_alive():
            with contextlib.suppress(RuntimeError, OSError, EOFError):
                self._call("stop")
            self._process.join(10)
        if self._process.is_alive():
            self._process.terminate()
            self._process.join(5)
