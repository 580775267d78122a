"""Issue 13's attacks on the HTTP serving paths, carried out against `spiffe-bridge run`
as a real process on the dev stack: slowloris on the metadata listeners (item 4), idle
connections and DNS rebinding on the health server (5), another local uid reading IMDS
(6), and smuggling through the metadata request parser (14)."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from botocore.utils import ContainerMetadataFetcher

from bridge.devstack import DEMO_ROLE_ARN, DevStack
from tests.conftest import WriteConfig
from tests.support.configs import gcp_target
from tests.support.process import bridge_cli, free_port, start_bridge, stop
from tests.support.wait import wait_for

pytestmark = pytest.mark.integration

NOBODY = 65534


@dataclass
class Served:
    proc: subprocess.Popen[str]
    config: Path
    http: int
    container: int
    imds: int
    gce: int
    token: str

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http}/metrics", timeout=5) as r:
            return r.read().decode()

    def refusals(self, endpoint: str, reason: str) -> float:
        line = (f'spiffe_bridge_metadata_refusals_total{{endpoint="{endpoint}",'
                f'reason="{reason}"}} ')
        found = [x for x in self.metrics().splitlines() if x.startswith(line)]
        return float(found[0].split()[-1]) if found else 0.0

    def threads(self) -> int:
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        return int(next(x for x in status.splitlines() if x.startswith("Threads:")).split()[1])


@pytest.fixture
def served(stack: DevStack, write_config: WriteConfig, outdir: Path,
           short_dir: Path) -> Iterator[Served]:
    """`run` serving one AWS target over the container endpoint and IMDS (readable by
    this test's uid only), each on a fixed loopback port."""
    path = write_config(targets=[
        {"name": "demo", "serve": ["container", "imds"],
         "aws": {"role_arn": DEMO_ROLE_ARN, "region": "us-east-1",
                 "sts_endpoint": stack.aws_sts_url}},
        gcp_target(stack, "demo-gcp", serve=["gce"])])
    ports = {k: free_port() for k in ("http", "container", "imds", "gce")}
    doc = yaml.safe_load(path.read_text())
    doc["http"] = {"address": f"127.0.0.1:{ports['http']}"}
    doc["metadata"] = {
        "container": {"address": f"127.0.0.1:{ports['container']}"},
        "imds": {"address": f"127.0.0.1:{ports['imds']}", "allowed_uids": [os.getuid()]},
        "gce": {"address": f"127.0.0.1:{ports['gce']}", "allowed_uids": [os.getuid()]}}
    path.write_text(yaml.safe_dump(doc))
    log = short_dir / "bridge.log"
    proc = start_bridge("run", "--config", str(path), log=log)
    try:
        token_file = outdir / "container.token"
        wait_for((outdir / "aws" / "demo.json").exists, "the first credential",
                 detail=lambda: log.read_text()[-500:])
        wait_for((outdir / "gcp" / "demo-gcp.token").exists, "the GCP token")
        wait_for(token_file.exists, "the container token")
        yield Served(proc, path, ports["http"], ports["container"], ports["imds"],
                     ports["gce"], token_file.read_text())
    finally:
        code, _, _ = stop(proc)
        text = log.read_text()
        assert "Traceback" not in text, text[-2000:]
        assert code == 0, text[-2000:]


def _exchange(port: int, raw: bytes, timeout: float = 5.0) -> tuple[int, bytes, bool]:
    """Send `raw`, read until the server closes or goes quiet: (status, everything
    read, whether the server closed the connection)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(raw)
        data = b""
        closed = False
        with contextlib.suppress(TimeoutError):
            s.settimeout(1.0)
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    closed = True
                    break
                data += chunk
    status = int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/1.1 ") else 0
    return status, data, closed


class Slowloris:
    """`count` connections that each send part of a head and then one byte at a time,
    reopened as soon as the server cuts them: the attack of issue 13 item 4."""

    def __init__(self, port: int, count: int, *, interval: float = 1.0) -> None:
        self._port, self._count, self._interval = port, count, interval
        self._stop = threading.Event()
        self.reopened = 0
        self._socks: list[socket.socket | None] = [None] * count
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Slowloris:
        for i in range(self._count):
            self._socks[i] = self._open()
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(10)
        for s in self._socks:
            if s is not None:
                s.close()

    def _open(self) -> socket.socket | None:
        try:
            s = socket.create_connection(("127.0.0.1", self._port), timeout=2)
            s.sendall(b"GET /v1/credentials/demo HTTP/1.1\r\nHo")
            s.setblocking(False)
            return s
        except OSError:
            return None

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            for i, s in enumerate(self._socks):
                if self._stop.is_set():
                    return
                alive = s is not None
                if s is not None:
                    try:
                        s.send(b"s")
                    except (BlockingIOError, InterruptedError):
                        pass
                    except OSError:
                        alive = False
                if not alive:
                    if s is not None:
                        s.close()
                    self._socks[i] = self._open()
                    self.reopened += 1


def test_sdk_requests_are_served_within_a_second_while_500_slow_connections_are_held(
        served: Served) -> None:
    """Item 4: 500 trickling connections (reopened when cut) against the container
    endpoint; botocore's container fetcher still gets credentials, each call in under a
    second, and a head trickled one byte a second is cut by its deadline."""
    fetcher = ContainerMetadataFetcher()  # its own timeout (2 s) and one retry
    url = f"http://127.0.0.1:{served.container}/v1/credentials/demo"
    with Slowloris(served.container, 500) as attack:
        time.sleep(2)  # the attack is in full swing: every slot was taken at least once
        took = []
        for _ in range(10):
            started = time.monotonic()
            creds = fetcher.retrieve_full_uri(url, headers={"Authorization": served.token})
            took.append(time.monotonic() - started)
            assert creds["AccessKeyId"].startswith("ASIA")
            time.sleep(0.2)
        assert max(took) < 1.0, took
        assert attack.reopened > 0, "the server never cut a slow connection"
    with socket.create_connection(("127.0.0.1", served.container), timeout=15) as s:
        s.sendall(b"GET /v1/credentials/demo HTTP/1.1\r\n")
        started = time.monotonic()
        cut = False
        s.settimeout(1.0)
        while not cut and time.monotonic() - started < 12:
            try:
                s.sendall(b"x")
                answer = s.recv(4096)
            except TimeoutError:
                continue
            cut = True
            assert answer.startswith(b"HTTP/1.1 408 "), answer[:40]
        assert cut, "a head trickled one byte a second was still open after 12 s"
        assert time.monotonic() - started < 8
    assert served.refusals("container", "evicted") > 0
    assert served.refusals("container", "slow") > 0


def test_the_health_server_is_bounded_and_refuses_rebinding(served: Served) -> None:
    """Item 5: 400 idle connections leave the daemon's thread count bounded and /healthz
    answering within a second; a DNS name in `Host` is refused on every path."""
    before = served.threads()
    idle = []
    try:
        for _ in range(400):
            with contextlib.suppress(OSError):
                idle.append(socket.create_connection(("127.0.0.1", served.http), timeout=2))
        time.sleep(1.0)
        during = served.threads()
        assert during <= before + 64 + 8, (before, during)
        started = time.monotonic()
        with urllib.request.urlopen(f"http://127.0.0.1:{served.http}/healthz", timeout=2) as r:
            assert json.loads(r.read())["live"] is True
        assert time.monotonic() - started < 1.0
    finally:
        for s in idle:
            s.close()
    for path in ("/readyz", "/metrics", "/healthz"):
        conn = http.client.HTTPConnection("127.0.0.1", served.http, timeout=5)
        try:
            conn.request("GET", path, headers={"Host": f"rebind.attacker.example:{served.http}"})
            response = conn.getresponse()
            body = response.read()
        finally:
            conn.close()
        assert response.status == 421, path
        assert b"demo" not in body
    for host in (f"127.0.0.1:{served.http}", "10.1.2.3:9464", "[::1]:9464", "localhost"):
        conn = http.client.HTTPConnection("127.0.0.1", served.http, timeout=5)
        try:
            conn.request("GET", "/readyz", headers={"Host": host})
            assert conn.getresponse().status in (200, 503), host
        finally:
            conn.close()


# The clients drop to their uid themselves: `subprocess.run(user=...)` forks without
# vfork, and the in-process dev stack's gRPC fork handlers then crash the child.
_AS_UID = r"""
import os, sys
uid = int(sys.argv[2])
if os.getuid() != uid:
    os.setgroups([])
    os.setgid(uid)
    os.setuid(uid)
assert os.getuid() == os.geteuid() == uid
"""
_IMDS_CLIENT = _AS_UID + r"""
import http.client, json
port = int(sys.argv[1])
c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
c.request("PUT", "/latest/api/token", headers={"X-aws-ec2-metadata-token-ttl-seconds": "60"})
r = c.getresponse(); token = r.read().decode()
out = {"put": r.status}
if r.status == 200:
    path = "/latest/meta-data/iam/security-credentials/demo"
    c.request("GET", path, headers={"X-aws-ec2-metadata-token": token})
    r = c.getresponse(); body = r.read()
    out["get"] = r.status
    out["has_key"] = b"AccessKeyId" in body
print(json.dumps(out))
"""


def _imds_as(uid: int, port: int) -> dict[str, object]:
    proc = subprocess.run(["/usr/bin/python3", "-c", _IMDS_CLIENT, str(port), str(uid)],
                          capture_output=True, text=True, timeout=30, check=False, cwd="/",
                          env={"PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr
    return dict(json.loads(proc.stdout))


@pytest.mark.skipif(os.getuid() != 0, reason="starting a process as another uid needs root")
def test_imds_serves_only_the_allowed_uid(served: Served) -> None:
    """Item 6: a process running as another uid (nobody) is refused with 403 and
    counted as `uid`; the allowed uid (this test's) gets credentials."""
    assert _imds_as(NOBODY, served.imds) == {"put": 403}
    assert served.refusals("imds", "uid") == 1
    assert _imds_as(os.getuid(), served.imds) == {"put": 200, "get": 200, "has_key": True}
    assert served.refusals("imds", "uid") == 1


_GCE_CLIENT = _AS_UID + r"""
import http.client, json
port = int(sys.argv[1])
c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
c.request("GET", "/computeMetadata/v1/instance/service-accounts/default/token",
          headers={"Metadata-Flavor": "Google"})
r = c.getresponse(); body = r.read()
print(json.dumps({"get": r.status, "has_token": b"access_token" in body}))
"""


@pytest.mark.skipif(os.getuid() != 0, reason="starting a process as another uid needs root")
def test_gce_serves_only_the_allowed_uid(served: Served) -> None:
    """Item 6, GCE: the same gate; nobody gets 403 `uid`, this uid a token."""
    def as_uid(uid: int) -> dict[str, object]:
        proc = subprocess.run(["/usr/bin/python3", "-c", _GCE_CLIENT, str(served.gce),
                               str(uid)], capture_output=True, text=True, timeout=30,
                              check=False, cwd="/", env={"PATH": "/usr/bin:/bin"})
        assert proc.returncode == 0, proc.stderr
        return dict(json.loads(proc.stdout))

    assert as_uid(NOBODY) == {"get": 403, "has_token": False}
    assert served.refusals("gce", "uid") == 1
    assert as_uid(os.getuid()) == {"get": 200, "has_token": True}


def test_check_refuses_imds_without_allowed_uids_and_says_who_reads_what(
        served: Served) -> None:
    """Item 6: secure by default; `check` names the key, and lists the exposure."""
    doc = yaml.safe_load(served.config.read_text())
    ok = bridge_cli("check", "--config", str(served.config), timeout=60)
    assert ok.returncode == 0, ok.stderr
    assert f"metadata.imds on 127.0.0.1:{served.imds} serves demo to uid {os.getuid()}" in (
        ok.stdout)
    assert f"metadata.container on 127.0.0.1:{served.container} serves demo to every " \
           "local user that can read" in ok.stdout
    assert f"metadata.gce on 127.0.0.1:{served.gce} serves demo-gcp to uid " in ok.stdout
    del doc["metadata"]["imds"]["allowed_uids"]
    bad = served.config.with_name("no-uids.yaml")
    bad.write_text(yaml.safe_dump(doc))
    refused = bridge_cli("check", "--config", str(bad), timeout=60)
    assert refused.returncode != 0
    assert "metadata.imds.allowed_uids" in refused.stderr + refused.stdout
    assert "Traceback" not in refused.stderr


def _baseline(served: Served) -> str:
    """A request head the container endpoint serves (200), without its blank line."""
    head = (f"GET /v1/credentials/demo HTTP/1.1\r\nHost: 127.0.0.1:{served.container}\r\n"
            f"Authorization: {served.token}\r\n")
    assert _exchange(served.container, f"{head}\r\n".encode())[0] == 200
    return head


def test_proxy_headers_of_every_spelling_are_refused(served: Served) -> None:
    """Item 14: X-Real-IP, Via and the other proxy headers mean "not a local process"."""
    head = _baseline(served)
    for proxy in ("X-Real-IP: 203.0.113.9", "Via: 1.1 proxy", "X-Forwarded-Host: a.example",
                  "X-Client-IP: 203.0.113.9", "True-Client-IP: 203.0.113.9"):
        status, body, _ = _exchange(served.container, f"{head}{proxy}\r\n\r\n".encode())
        assert status == 403, proxy
        assert b"AccessKeyId" not in body
    assert served.refusals("container", "forwarded") == 5


@pytest.mark.parametrize("smuggled", [
    "X-Forwarded-For : 203.0.113.9", "Junk\r\nX-Forwarded-For: 203.0.113.9",
    " folded\r\nX-Forwarded-For: 203.0.113.9", "X-Forwarded-For\t: 203.0.113.9",
], ids=["space-before-colon", "line-without-colon", "folded-line", "tab-before-colon"])
def test_a_malformed_header_line_is_400_and_hides_nothing(served: Served,
                                                           smuggled: str) -> None:
    """Item 14: a header line without a colon, or with whitespace before it, is 400
    and closes: X-Forwarded-For cannot slip through after (or inside) it."""
    head = _baseline(served)
    status, body, closed = _exchange(served.container, f"{head}{smuggled}\r\n\r\n".encode())
    assert status == 400
    assert closed
    assert b"AccessKeyId" not in body
    assert served.refusals("container", "malformed") == 1


def test_two_different_content_lengths_are_400_and_close(served: Served) -> None:
    """Item 14: no desync: nothing after the conflicting head is answered."""
    head = _baseline(served)
    status, body, closed = _exchange(
        served.container,
        f"{head}Content-Length: 0\r\nContent-Length: 45\r\n\r\n".encode()
        + f"GET /v1/credentials/demo HTTP/1.1\r\nHost: 127.0.0.1:{served.container}\r\n\r\n"
          .encode())
    assert (status, closed) == (400, True)
    assert body.count(b"HTTP/1.1 ") == 1


def test_a_5000_digit_imds_ttl_is_400_not_500(served: Served) -> None:
    """Item 14: the TTL is checked for length before it is read as a number."""
    status, _, _ = _exchange(served.imds, (
        f"PUT /latest/api/token HTTP/1.1\r\nHost: 127.0.0.1:{served.imds}\r\n"
        f"X-aws-ec2-metadata-token-ttl-seconds: {'9' * 5000}\r\n\r\n").encode())
    assert status == 400
    assert 'code="500"' not in served.metrics()


def test_a_reload_narrowing_allowed_uids_applies_to_the_kept_listener(served: Served) -> None:
    """Item 6 over time: SIGHUP keeps the IMDS socket open (same address) but applies the
    new `allowed_uids` at once, to new connections and to a connection opened before."""
    kept = http.client.HTTPConnection("127.0.0.1", served.imds, timeout=5)
    try:
        kept.request("PUT", "/latest/api/token",
                     headers={"X-aws-ec2-metadata-token-ttl-seconds": "60"})
        response = kept.getresponse()
        response.read()
        assert response.status == 200
        doc = yaml.safe_load(served.config.read_text())
        doc["metadata"]["imds"]["allowed_uids"] = [os.getuid() + 4242]
        served.config.write_text(yaml.safe_dump(doc))
        served.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: 'spiffe_bridge_config_reloads_total{result="applied"} 1.0' in
                 served.metrics(), "the reload")  # counted before the daemon is rebuilt:
        wait_for(lambda: _imds_as(os.getuid(), served.imds) == {"put": 403},  # wait for it
                 "the narrowed allowed_uids on a new connection")
        before = served.refusals("imds", "uid")  # the polls above: one or more
        assert before >= 1
        kept.request("PUT", "/latest/api/token",
                     headers={"X-aws-ec2-metadata-token-ttl-seconds": "60"})
        response = kept.getresponse()
        response.read()
        assert response.status == 403
    finally:
        kept.close()
    assert served.refusals("imds", "uid") == before + 1  # the kept connection's request
