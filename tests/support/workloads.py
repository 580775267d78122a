"""Workload processes under other uids, for the broker tests.

The test Python lives under /root (mode 0700), which other uids cannot read, so a
workload cannot be a fresh interpreter of another uid. Instead each workload is forked
from a multiprocessing *forkserver* (exec'd once, single-threaded, so a fork never
copies a lock some thread held) that has preloaded everything the workload needs; the
child switches to its uid (setgroups, setgid, setuid: no way back) before doing
anything, then makes its calls with the modules already in memory. botocore's data
files and the venv are under /work, readable by all.
"""

from __future__ import annotations

import array
import contextlib
import multiprocessing
import multiprocessing.context
import os
import socket
import time
from collections.abc import Callable
from typing import Any

# Everything a workload imports, also lazily (after setuid the stdlib is unreadable).
PRELOAD = ["boto3", "botocore.session", "botocore.credentials", "botocore.utils",
           "botocore.httpsession", "botocore.handlers", "botocore.endpoint",
           "botocore.parsers", "botocore.auth", "botocore.awsrequest",
           "botocore.retries.standard", "botocore.retries.adaptive", "botocore.crt",
           "botocore.regions", "botocore.client", "botocore.useragent",
           "urllib3", "urllib3.util.ssl_", "http.client", "json", "encodings.idna",
           "stringprep", "unicodedata", "email.utils", "hmac", "hashlib", "uuid",
           "xml.etree.ElementTree", "_strptime", "datetime", "calendar", "locale",
           "dateutil.parser", "dateutil.tz", "botocore.compat", "botocore.docs",
           "concurrent.futures", "ssl", "certifi", "email.parser", "email.feedparser",
           "platform", "zlib", "gzip", "decimal", "queue", "selectors", "base64",
           "binascii", "ipaddress", "urllib.request", "mimetypes", "shlex", "getpass",
           "botocore.configprovider", "botocore.tokens", "botocore.signers",
           "botocore.discovery", "botocore.history", "botocore.paginate",
           "botocore.waiter", "botocore.response", "botocore.eventstream",
           "botocore.model", "botocore.validate", "botocore.serialize",
           "botocore.httpchecksum", "botocore.context", "botocore.plugin", "grpc",
           "bridge._proto.spiffebridge.v1.credentials_pb2_grpc", "bridge.cli.full",
           "bridge.cli.readers", "bridge.client", "bridge.clouds.aws",
           "bridge.clouds.aws.files", "io", "argparse", "tempfile", "threading",
           "tests.support.workloads"]


def context() -> multiprocessing.context.ForkServerContext:
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    return ctx  # type: ignore[return-value]


def use_scratch(directory: str) -> None:
    """Put multiprocessing's socket directory in `directory` (the caller removes it):
    its own one in /tmp would go only at interpreter exit. Before the first workload."""
    import multiprocessing.process

    current = multiprocessing.process.current_process()
    current._config["tempdir"] = directory  # type: ignore[attr-defined]


def shutdown() -> None:
    """Stop the forkserver (the stdlib's own test hook `_stop`) and forget the scratch
    directory `use_scratch` set."""
    import multiprocessing.forkserver
    import multiprocessing.process

    multiprocessing.forkserver._forkserver._stop()  # type: ignore[attr-defined]
    current = multiprocessing.process.current_process()
    current._config.pop("tempdir", None)  # type: ignore[attr-defined]


class Workload:
    """One started workload process; `result()` waits for its answer."""

    def __init__(self, uid: int, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        ctx = context()
        self.uid = uid
        self._parent, child = ctx.Pipe(duplex=False)
        self.proc = ctx.Process(target=_child, args=(child, uid, fn, args))
        self.proc.start()  # socket arguments reach the child duplicated (multiprocessing)
        child.close()

    @property
    def pid(self) -> int:
        assert self.proc.pid is not None
        return self.proc.pid

    def result(self, timeout: float = 60.0) -> Any:
        try:
            if not self._parent.poll(timeout):
                raise TimeoutError(f"workload uid {self.uid} did not answer in {timeout}s")
            ok, value = self._parent.recv()
        finally:
            self.proc.join(10)
            if self.proc.is_alive():
                self.proc.kill()
                self.proc.join(5)
            self._parent.close()
        if not ok:
            raise AssertionError(f"workload uid {self.uid} failed: {value}")
        return value


def run_as(uid: int, fn: Callable[..., Any], *args: Any, timeout: float = 60.0) -> Any:
    """`fn(*args)` in a fresh process of `uid`; its return value (or its exception)."""
    return Workload(uid, fn, args).result(timeout)


def become(uid: int) -> None:
    os.setgroups([])
    os.setgid(uid)
    os.setuid(uid)


def _child(conn: Any, uid: int, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
    try:
        become(uid)
        conn.send((True, fn(*args)))
    except BaseException as exc:  # reported to the test
        conn.send((False, f"{type(exc).__name__}: {exc}"))
    finally:
        conn.close()


# -- what workloads do (each runs in the child, as its uid) ---------------------------


def grpc_get(socket_path: str, rule: str, metadata: tuple[tuple[str, str], ...] = ()
             ) -> dict[str, Any]:
    """GetCredential(workload_target=rule) on the workload socket."""
    import grpc

    from bridge._proto.spiffebridge.v1 import credentials_pb2 as pb
    from bridge._proto.spiffebridge.v1 import credentials_pb2_grpc as pb_grpc

    with grpc.insecure_channel(f"unix:{socket_path}") as channel:
        stub = pb_grpc.CredentialServiceStub(channel)
        start = time.monotonic()
        try:
            response = stub.GetCredential(pb.GetCredentialRequest(workload_target=rule),
                                          timeout=20, metadata=metadata)
        except grpc.RpcError as exc:
            return {"code": exc.code().name, "details": exc.details(),
                    "seconds": time.monotonic() - start}
    c = response.credential
    return {"code": "OK", "access_key_id": c.aws.access_key_id, "spiffe_id": c.spiffe_id,
            "seconds": time.monotonic() - start, "pid": os.getpid()}


def boto3_identity(imds_url: str, sts_url: str) -> dict[str, Any]:
    """An unmodified boto3 on IMDSv2: its credentials, then GetCallerIdentity."""
    import boto3

    os.environ.pop("AWS_PROFILE", None)
    os.environ["AWS_EC2_METADATA_SERVICE_ENDPOINT"] = imds_url
    os.environ["AWS_CONFIG_FILE"] = os.environ["AWS_SHARED_CREDENTIALS_FILE"] = "/dev/null"
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                 "AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_WEB_IDENTITY_TOKEN_FILE"):
        os.environ.pop(name, None)
    session = boto3.Session(region_name="us-east-1")
    credentials = session.get_credentials()
    if credentials is None:
        return {"access_key_id": None}
    sts = session.client("sts", endpoint_url=sts_url)
    who = sts.get_caller_identity()
    return {"access_key_id": credentials.get_frozen_credentials().access_key,
            "arn": who["Arn"]}


def imds_raw(address: tuple[str, int], rule: str) -> dict[str, Any]:
    """PUT a token, GET the credential: status and body (no SDK, one connection)."""
    with socket.create_connection(address, timeout=20) as s:
        token = _http(s, "PUT", "/latest/api/token",
                      {"X-aws-ec2-metadata-token-ttl-seconds": "60"}, address)[1]
        status, body = _http(s, "GET", f"/latest/meta-data/iam/security-credentials/{rule}",
                             {"X-aws-ec2-metadata-token": token}, address)
    return {"status": status, "body": body}


def imds_handoff(address: tuple[str, int], rule: str, carrier: socket.socket,
                 keep_own: bool) -> dict[str, Any]:
    """As a workload: open a kept-alive IMDS connection, use it once, then hand it
    (SCM_RIGHTS over `carrier`, a unix socket) to another process, closing
    our own copy unless `keep_own`; wait until told to finish."""
    s = socket.create_connection(address, timeout=20)
    token = _http(s, "PUT", "/latest/api/token",
                  {"X-aws-ec2-metadata-token-ttl-seconds": "60"}, address)[1]
    status, _ = _http(s, "GET", f"/latest/meta-data/iam/security-credentials/{rule}",
                      {"X-aws-ec2-metadata-token": token}, address)
    with carrier as line:
        line.settimeout(20)
        line.sendmsg([token.encode()], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                         array.array("i", [s.fileno()]))])
        if not keep_own:
            s.close()
        line.recv(1)  # the receiver is done
    with contextlib.suppress(OSError):
        s.close()
    return {"own_status": status}


def imds_use_received(address: tuple[str, int], rule: str,
                      carrier: socket.socket) -> dict[str, Any]:
    """As another process: take the handed-over connection and ask on it."""
    with carrier as line:
        line.settimeout(20)
        fds = array.array("i")
        message, ancillary, _, _ = line.recvmsg(256, socket.CMSG_SPACE(fds.itemsize))
        for level, kind, data in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds.frombytes(data[:fds.itemsize])
        conn = socket.socket(fileno=fds[0])
        conn.settimeout(20)
        status, body = _http(conn, "GET", f"/latest/meta-data/iam/security-credentials/{rule}",
                             {"X-aws-ec2-metadata-token": message.decode()}, address)
        conn.close()
        line.send(b"x")
    return {"status": status, "body": body}


def _http(s: socket.socket, method: str, path: str, headers: dict[str, str],
          address: tuple[str, int]) -> tuple[int, str]:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {address[0]}:{address[1]}",
             "Content-Length: 0", *(f"{k}: {v}" for k, v in headers.items()), "", ""]
    s.sendall("\r\n".join(lines).encode())
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    status = int(head.split()[1])
    length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                   if line.lower().startswith(b"content-length:")), 0)
    while len(rest) < length:
        chunk = s.recv(65536)
        if not chunk:
            break
        rest += chunk
    return status, rest[:length].decode(errors="replace")


def grpc_latencies(socket_path: str, rule: str, calls: int) -> list[float]:
    """`calls` GetCredential(workload_target=rule) on one channel: seconds each (the
    first is the cold one when the identity is new)."""
    import grpc

    from bridge._proto.spiffebridge.v1 import credentials_pb2 as pb
    from bridge._proto.spiffebridge.v1 import credentials_pb2_grpc as pb_grpc

    seconds: list[float] = []
    with grpc.insecure_channel(f"unix:{socket_path}") as channel:
        grpc.channel_ready_future(channel).result(timeout=10)
        stub = pb_grpc.CredentialServiceStub(channel)
        for _ in range(calls):
            start = time.perf_counter()
            stub.GetCredential(pb.GetCredentialRequest(workload_target=rule), timeout=30)
            seconds.append(time.perf_counter() - start)
    return seconds


def grpc_watch_first(socket_path: str, rule: str) -> dict[str, Any]:
    """WatchCredential(workload_target=rule): the first message."""
    import grpc

    from bridge._proto.spiffebridge.v1 import credentials_pb2 as pb
    from bridge._proto.spiffebridge.v1 import credentials_pb2_grpc as pb_grpc

    with grpc.insecure_channel(f"unix:{socket_path}") as channel:
        stream = pb_grpc.CredentialServiceStub(channel).WatchCredential(
            pb.WatchCredentialRequest(workload_target=rule), timeout=20)
        try:
            first = next(iter(stream))
        except grpc.RpcError as exc:
            return {"code": exc.code().name, "details": exc.details()}
        stream.cancel()
    c = first.credential
    return {"code": "OK", "access_key_id": c.aws.access_key_id, "spiffe_id": c.spiffe_id}


def gce_raw(address: tuple[str, int]) -> dict[str, Any]:
    """As google-auth's compute_engine does: the default account's email, then its token
    (one connection, `Metadata-Flavor: Google`)."""
    base = "/computeMetadata/v1/instance/service-accounts/default/"
    flavor = {"Metadata-Flavor": "Google"}
    with socket.create_connection(address, timeout=20) as s:
        email_status, email = _http(s, "GET", base + "email", flavor, address)
        token_status, token = _http(s, "GET", base + "token", flavor, address)
    return {"email_status": email_status, "email": email, "token_status": token_status,
            "token": token}


def credential_process(socket_path: str, rule: str) -> dict[str, Any]:
    """`spiffe-bridge credential-process --workload-target rule` as this process (its
    main(), not an exec: the interpreter is not ours to run): exit code and JSON."""
    import contextlib as _contextlib
    import io
    import json

    from bridge.cli.full import main

    out, err = io.StringIO(), io.StringIO()
    with _contextlib.redirect_stdout(out), _contextlib.redirect_stderr(err):
        code = main(["credential-process", "--workload-target", rule,
                     "--socket", f"unix://{socket_path}"])
    return {"code": code, "json": json.loads(out.getvalue()) if code == 0 else None,
            "stderr": err.getvalue()}


def connect_and_hand_over(socket_path: str, carrier: socket.socket) -> dict[str, Any]:
    """As a workload: connect to the workload socket, hand the connection to another
    process (SCM_RIGHTS over `carrier`, with our pid), close our copy and exit."""
    s = socket.socket(socket.AF_UNIX)
    s.connect(socket_path)
    with carrier as line:
        line.sendmsg([str(os.getpid()).encode()], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                                    array.array("i", [s.fileno()]))])
    s.close()
    return {"pid": os.getpid()}


def grpc_over_received(carrier: socket.socket, rule: str) -> dict[str, Any]:
    """As another process: take a workload-socket connection another process opened,
    wait until that process has exited, then make GetCredential calls over it (grpc
    cannot take an fd, so through a private relay: a listener only we use, copied
    byte for byte onto the received connection)."""
    import tempfile
    import threading

    import grpc

    from bridge._proto.spiffebridge.v1 import credentials_pb2 as pb
    from bridge._proto.spiffebridge.v1 import credentials_pb2_grpc as pb_grpc

    with carrier as line:
        line.settimeout(20)
        fds = array.array("i")
        message, ancillary, _, _ = line.recvmsg(64, socket.CMSG_SPACE(fds.itemsize))
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(data[:fds.itemsize])
    received = socket.socket(fileno=fds[0])
    connector = int(message.decode())
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:  # exited (gone, or a zombie not yet reaped)
        try:
            with open(f"/proc/{connector}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    break
        except OSError:
            break
        time.sleep(0.05)
    workdir = tempfile.mkdtemp(prefix="sb-relay-")
    path = os.path.join(workdir, "r.sock")
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(path)
    listener.listen(1)

    def pump(a: socket.socket, b: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := a.recv(65536):
                b.sendall(data)
        with contextlib.suppress(OSError):
            b.shutdown(socket.SHUT_WR)

    def relay() -> None:
        conn, _ = listener.accept()
        threading.Thread(target=pump, args=(conn, received), daemon=True).start()
        pump(received, conn)

    threading.Thread(target=relay, daemon=True).start()
    try:
        with grpc.insecure_channel(f"unix:{path}") as channel:
            try:
                response = pb_grpc.CredentialServiceStub(channel).GetCredential(
                    pb.GetCredentialRequest(workload_target=rule), timeout=20)
            except grpc.RpcError as exc:
                return {"code": exc.code().name, "details": exc.details()}
        return {"code": "OK", "access_key_id": response.credential.aws.access_key_id}
    finally:
        listener.close()
        os.unlink(path)
        os.rmdir(workdir)
