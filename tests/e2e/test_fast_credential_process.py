"""`credential-process` on the standard library alone (issue 18, item 1), against the
real daemon: the reader socket serves exactly the credential the daemon holds, under the
gRPC API's caller rules; the command imports nothing heavy once it knows where the
daemon is; and whatever the fast path cannot answer ends as the full CLI's answer."""

from __future__ import annotations

import json
import os
import socket
import subprocess
from pathlib import Path

import pytest

from bridge.devstack import DevStack
from bridge.readersocket import reader_socket
from tests.conftest import WriteConfig
from tests.support.configs import CALLER, aws_target
from tests.support.process import BRIDGE, REPO, clean_env, start_bridge, stop
from tests.support.wait import wait_for

pytestmark = pytest.mark.integration
HEAVY = ("grpc", "asyncio", "yaml", "boto3", "botocore", "google", "cryptography", "jwt",
         "prometheus_client", "spiffe", "bridge.config", "bridge.cli.full")


def _run(*args: str, cache: Path, importtime: bool = False
         ) -> subprocess.CompletedProcess[str]:
    command = [BRIDGE[0], *(("-X", "importtime") if importtime else ()), *BRIDGE[1:], *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=REPO,
                          env={**clean_env(), "XDG_CACHE_HOME": str(cache)}, check=False)


def _imported(stderr: str) -> set[str]:
    return {line.rsplit("|", 1)[1].strip() for line in stderr.splitlines()
            if line.startswith("import time:") and "|" in line}


def _get(sock: Path, path: str, token: str | None = None) -> tuple[int, bytes]:
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(10)
        s.connect(str(sock))
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: localhost\r\n{auth}"
                  "Connection: close\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


@pytest.fixture
def daemon(stack: DevStack, write_config: WriteConfig, outdir: Path,
           short_dir: Path) -> tuple[Path, Path]:
    config = write_config(targets=[aws_target(stack, "open"),
                                   aws_target(stack, "guarded", allowed_callers=[CALLER])])
    proc = start_bridge("run", "--config", str(config))
    try:
        wait_for(lambda: all((outdir / "aws" / f"{n}.json").exists()
                             for n in ("open", "guarded")), "first credentials")
        yield config, Path(reader_socket(str(short_dir / "bridge.sock")))
    finally:
        code, _, err = stop(proc)
    assert code == 0, err[-2000:]
    assert "Traceback" not in err


def test_through_the_daemon_with_nothing_heavy_imported(
        daemon: tuple[Path, Path], outdir: Path, tmp_path: Path) -> None:
    """The first call (full CLI) learns where the daemon is; the next ones import none of
    grpc, asyncio, yaml, the SDKs or the config loader, and print the daemon's current
    credential for the target."""
    config, _ = daemon
    cache = tmp_path / "cache"
    first = _run("credential-process", "--target", "open", "--config", str(config),
                 cache=cache, importtime=True)
    assert first.returncode == 0, first.stderr[-2000:]
    assert "grpc" in _imported(first.stderr)  # the full CLI, this once
    fast = _run("credential-process", "--target", "open", "--config", str(config),
                cache=cache, importtime=True)
    assert fast.returncode == 0, fast.stderr[-2000:]
    loaded = _imported(fast.stderr)
    assert not {m for m in loaded if m.split(".")[0] in HEAVY or m in HEAVY}, loaded
    served, written = json.loads(fast.stdout), json.loads(
        (outdir / "aws" / "open.json").read_text())
    assert served == written
    assert served["Version"] == 1
    assert served["AccessKeyId"].startswith("ASIA")


def test_the_reader_socket_keeps_the_grpc_caller_rules(
        daemon: tuple[Path, Path], stack: DevStack) -> None:
    _, sock = daemon
    assert oct(sock.stat().st_mode & 0o777) == oct(0o660)
    status, body = _get(sock, "/v1/files/aws/guarded.json")
    assert status == 401
    assert b"AccessKeyId" not in body
    other = stack.authority.mint("spiffe://example.org/ns/other/sa/x", ["spiffe-bridge"], 300)
    status, body = _get(sock, "/v1/files/aws/guarded.json", other)
    assert status == 403
    assert b"AccessKeyId" not in body
    allowed = stack.authority.mint(CALLER, ["spiffe-bridge"], 300)
    status, body = _get(sock, "/v1/files/aws/guarded.json", allowed)
    assert status == 200
    assert json.loads(body)["Version"] == 1
    # an unknown file answers an unauthenticated caller like a restricted target
    assert _get(sock, "/v1/files/aws/nope.json")[0] == 401
    assert _get(sock, "/v1/files/aws/nope.json", allowed)[0] == 404
    assert _get(sock, "/v1/files/../../etc/passwd", allowed)[0] == 404
    status, body = _get(sock, "/v1/files/aws/open.json")
    assert status == 200
    assert json.loads(body)["Version"] == 1


def test_a_guarded_target_without_an_svid_gets_the_full_cli_answer(
        daemon: tuple[Path, Path], tmp_path: Path) -> None:
    config, _ = daemon
    cache = tmp_path / "cache"
    for _ in range(2):  # the second call has the cache: the fast path hands over
        proc = _run("credential-process", "--target", "guarded", "--config", str(config),
                    cache=cache)
        assert proc.returncode == 1
        assert "needs a caller SVID" in proc.stderr, proc.stderr
        assert "AccessKeyId" not in proc.stdout
        assert "Traceback" not in proc.stderr


def test_a_cache_others_can_write_is_not_believed(
        daemon: tuple[Path, Path], tmp_path: Path, short_dir: Path) -> None:
    """A locate cache pointing at an impostor's socket, but writable by others (or not
    ours): ignored; the credentials printed are the daemon's, never the impostor's."""
    config, _ = daemon
    cache = tmp_path / "cache"
    assert _run("credential-process", "--target", "open", "--config", str(config),
                cache=cache).returncode == 0
    (entry,) = (cache / "spiffe-bridge" / "locate").iterdir()
    impostor_grpc = short_dir / "impostor.sock"
    impostor = Path(reader_socket(str(impostor_grpc)))
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(impostor))
    listener.listen(8)
    listener.settimeout(0.2)
    try:
        doc = json.loads(entry.read_text())
        doc["socket"] = str(impostor_grpc)
        entry.write_text(json.dumps(doc))
        entry.chmod(0o666)
        proc = _run("credential-process", "--target", "open", "--config", str(config),
                    cache=cache)
        with pytest.raises(TimeoutError):  # nobody came to the impostor
            listener.accept()
    finally:
        listener.close()
        impostor.unlink(missing_ok=True)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["AccessKeyId"].startswith("ASIA")
    assert oct(entry.stat().st_mode & 0o777) == oct(0o600)  # rewritten by the full CLI


def test_directory_reads_stay_strict(tmp_path: Path) -> None:
    """--directory on the fast path: an expired document, a symlink, a FIFO and a
    non-document all end as the full CLI's one-line failure, never printed."""
    aws = tmp_path / "creds" / "aws"
    aws.mkdir(parents=True)
    expired = {"Version": 1, "AccessKeyId": "A", "SecretAccessKey": "S",
               "SessionToken": "T", "Expiration": "2020-01-01T00:00:00Z"}
    (aws / "old.json").write_text(json.dumps(expired))
    os.mkfifo(aws / "fifo.json")
    (aws / "link.json").symlink_to(aws / "old.json")
    (aws / "junk.json").write_text("[1, 2]")
    for name in ("old", "fifo", "link", "junk"):
        proc = _run("credential-process", "--target", name, "--directory",
                    str(tmp_path / "creds"), cache=tmp_path / "cache")
        assert proc.returncode == 1, (name, proc.stdout)
        assert proc.stdout == "", name
        assert "Traceback" not in proc.stderr, name
    good = {**expired, "Expiration": "2099-01-01T00:00:00Z"}
    (aws / "good.json").write_text(json.dumps(good))
    proc = _run("credential-process", "--target", "good", "--directory",
                str(tmp_path / "creds"), cache=tmp_path / "cache", importtime=True)
    assert proc.returncode == 0
    assert json.loads(proc.stdout) == good
    assert "socket" not in _imported(proc.stderr)
