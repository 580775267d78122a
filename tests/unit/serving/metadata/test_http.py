"""The loopback server under every metadata emulator: Host and proxy checks, bounded
connections, keep-alive, stop, no request logging. Real sockets, http.client clients."""

from __future__ import annotations

import contextlib
import http.client
import logging
import os
import socket
import time
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry

from bridge.metrics import Metrics
from bridge.serving.http1 import Reply, Request
from bridge.serving.metadata.http import LoopbackServer
from bridge.serving.metadata.messages import host_allowed, text
from tests.support.local_http import call, count

SECRET = "AKIA-very-secret-value-0123456789"


class Fixed(LoopbackServer):
    """A listener answering a constant, or raising on /boom (its message holds a secret)."""

    endpoint = "test"

    def handle(self, request: Request) -> Reply:
        if request.path == "/boom":
            raise ValueError(f"bad header {SECRET}")
        return text(200, f"ok {request.path} {request.param('q')}")


@pytest.fixture
def metrics() -> Metrics:
    return Metrics(CollectorRegistry())


@pytest.fixture
def server(metrics: Metrics) -> Iterator[Fixed]:
    s = Fixed("127.0.0.1:0", metrics=metrics)
    s.start()
    yield s
    s.stop()


@pytest.mark.parametrize("value", [
    "127.0.0.1:{p}", "localhost:{p}", "LocalHost:{p}", "[::1]:{p}", "127.0.0.53:{p}",
    "[0:0:0:0:0:0:0:1]:{p}",
])
def test_loopback_hosts_with_the_port_are_allowed(value: str) -> None:
    assert host_allowed(value.format(p=8123), 8123)


@pytest.mark.parametrize("value", [
    "evil.example:{p}", "127.0.0.1.nip.io:{p}", "localhost.:{p}", "10.0.0.1:{p}",
    "169.254.169.254:{p}", "127.0.0.1:{q}", "127.0.0.1", "localhost", "[::1]", "::1:{p}",
    "[127.0.0.1]:{p}", "127.1:{p}", "0x7f.0.0.1:{p}", "2130706433:{p}", "[::1]x:{p}",
    "[::1:{p}", "127.0.0.1:+{p}", "127.0.0.1:{p}0", "", ":{p}", "[::ffff:127.0.0.1]:{p}",
])
def test_other_hosts_are_refused(value: str) -> None:
    """DNS names (rebinding), other ports, unbracketed IPv6, numeric tricks."""
    assert not host_allowed(value.format(p=8123, q=8124), 8123)


def test_host_without_port_is_allowed_only_on_port_80() -> None:
    assert host_allowed("localhost", 80)
    assert host_allowed("127.0.0.1", 80)


def test_binds_at_start_not_before(metrics: Metrics) -> None:
    """`once` builds the daemon without starting services: no port may be taken."""
    s = Fixed("127.0.0.1:0", metrics=metrics)
    assert s.port == 0
    s.start()
    try:
        assert s.port != 0
        assert s.url == f"http://127.0.0.1:{s.port}"
        assert call(s.port)[0] == 200
    finally:
        s.stop()
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", s.port), timeout=1):
        pass


@pytest.mark.parametrize(("headers", "reason"), [
    ({"Host": "attacker.example:{p}"}, "host"),
    ({"Host": "127.0.0.1:1"}, "host"),
    ({"X-Forwarded-For": "203.0.113.9"}, "forwarded"),
    ({"x-forwarded-for": "127.0.0.1"}, "forwarded"),
    ({"Forwarded": "for=203.0.113.9"}, "forwarded"),
])
def test_foreign_host_and_proxied_requests_are_refused(server: Fixed, metrics: Metrics,
                                                       headers: dict[str, str],
                                                       reason: str) -> None:
    sent = {k: v.format(p=server.port) for k, v in headers.items()}
    status, _, body = call(server.port, headers=sent)
    assert status == 403
    assert b"ok" not in body
    assert count(metrics, "spiffe_bridge_metadata_refusals_total", endpoint="test",
                 reason=reason) == 1
    assert count(metrics, "spiffe_bridge_metadata_requests_total", endpoint="test",
                 code="403") == 1


def test_two_host_headers_are_refused(server: Fixed) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
        s.sendall(f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
                  "Host: evil.example\r\n\r\n".encode())
        assert s.recv(4096).startswith(b"HTTP/1.1 403 ")


def test_missing_host_is_refused(server: Fixed) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
        s.sendall(b"GET / HTTP/1.1\r\n\r\n")
        assert s.recv(4096).startswith(b"HTTP/1.1 403 ")


def test_bodies_and_absolute_targets_are_refused(server: Fixed) -> None:
    assert call(server.port, "GET", "/", headers={"Content-Length": "3"})[0] == 400
    assert call(server.port, "GET", f"http://127.0.0.1:{server.port}/")[0] == 400


def test_wrong_method_is_405_and_unknown_method_501_without_echo(server: Fixed) -> None:
    status, headers, _ = call(server.port, "PUT", "/")
    assert (status, headers["Allow"]) == (405, "GET")
    status, _, body = call(server.port, "PATCH", f"/{SECRET}")
    assert status == 501
    assert SECRET.encode() not in body


def test_keep_alive_serves_many_requests_on_one_connection(server: Fixed) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    try:
        for i in range(5):
            status, headers, body = call(server.port, path=f"/x?q={i}", conn=conn)
            assert (status, body) == (200, f"ok /x {i}".encode())
            assert "Connection" not in headers
            assert headers["Cache-Control"] == "no-store"
        assert conn.sock is not None  # the same socket throughout
    finally:
        conn.close()


def test_http10_and_connection_close_get_closed(server: Fixed) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
        s.sendall(f"GET / HTTP/1.1\r\nHost: localhost:{server.port}\r\n"
                  "Connection: close\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(4096):
            data += chunk
    assert b"Connection: close" in data
    assert data.endswith(b"ok / None")


def test_connections_beyond_the_limit_get_a_canned_503(metrics: Metrics) -> None:
    """Bounded threads: the third connection is answered and closed without a thread."""
    s = Fixed("127.0.0.1:0", metrics=metrics, max_connections=2)
    s.start()
    held = [http.client.HTTPConnection("127.0.0.1", s.port, timeout=5) for _ in range(2)]
    try:
        for conn in held:
            assert call(s.port, conn=conn)[0] == 200
        status, headers, body = call(s.port)
        assert (status, body, headers["Connection"]) == (503, b"busy\n", "close")
        assert count(metrics, "spiffe_bridge_metadata_refusals_total", endpoint="test",
                     reason="busy") == 1
        held.pop().close()
        deadline = time.monotonic() + 5
        while call(s.port)[0] != 200:
            assert time.monotonic() < deadline, "the freed slot was never reused"
            time.sleep(0.05)
    finally:
        for conn in held:
            conn.close()
        s.stop()


def test_idle_keep_alive_connections_are_dropped(metrics: Metrics) -> None:
    s = Fixed("127.0.0.1:0", metrics=metrics, idle_timeout=0.3)
    s.start()
    try:
        with socket.create_connection(("127.0.0.1", s.port), timeout=5) as sock:
            started = time.monotonic()
            assert sock.recv(1) == b""  # closed by the server, not by our timeout
            assert time.monotonic() - started < 4
    finally:
        s.stop()


def test_stop_cuts_open_keep_alive_connections(metrics: Metrics) -> None:
    """Nothing is served after stop(), not even on a connection opened before."""
    s = Fixed("127.0.0.1:0", metrics=metrics)
    s.start()
    conn = http.client.HTTPConnection("127.0.0.1", s.port, timeout=5)
    try:
        assert call(s.port, conn=conn)[0] == 200
        s.stop()
        with pytest.raises((ConnectionError, http.client.HTTPException, OSError)):
            call(s.port, conn=conn)
    finally:
        conn.close()


def test_a_handler_error_is_a_500_and_logs_no_message(server: Fixed,
                                                      caplog: pytest.LogCaptureFixture
                                                      ) -> None:
    caplog.set_level(logging.DEBUG)
    status, _, body = call(server.port, path="/boom", headers={"Authorization": SECRET})
    assert status == 500
    assert SECRET.encode() not in body
    assert "ValueError" in caplog.text
    assert SECRET not in caplog.text


def test_requests_are_not_logged(server: Fixed, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    call(server.port, path="/p", headers={"Authorization": SECRET})
    call(server.port, path="/p", headers={"Host": "evil.example"})
    assert caplog.records == []


def test_ipv6_loopback_listener(metrics: Metrics) -> None:
    try:
        s = Fixed("[::1]:0", metrics=metrics)
        s.start()
    except OSError:
        pytest.skip("no IPv6 loopback here")
    try:
        assert s.url.startswith("http://[::1]:")
        c = http.client.HTTPConnection("::1", s.port, timeout=5)
        try:
            c.request("GET", "/")
            assert c.getresponse().status == 200
        finally:
            c.close()
    finally:
        s.stop()


def test_allowed_uids_gate_by_the_callers_socket_owner(metrics: Metrics) -> None:
    """The owner of the caller's socket must be listed: this process's uid is served,
    a listener for another uid refuses it with 403, counted as `uid`."""
    other = Fixed("127.0.0.1:0", metrics=metrics, allowed_uids=[os.getuid() + 1])
    mine = Fixed("127.0.0.1:0", metrics=metrics, allowed_uids=[os.getuid()])
    other.start()
    mine.start()
    try:
        assert call(other.port)[0] == 403
        assert count(metrics, "spiffe_bridge_metadata_refusals_total", endpoint="test",
                     reason="uid") == 1
        assert call(mine.port)[0] == 200
        assert count(metrics, "spiffe_bridge_metadata_refusals_total", endpoint="test",
                     reason="uid") == 1
    finally:
        other.stop()
        mine.stop()


def test_a_partial_head_is_cut_at_its_deadline_not_per_read(metrics: Metrics) -> None:
    """Bytes trickling in do not extend the deadline: 408 and close."""
    s = Fixed("127.0.0.1:0", metrics=metrics)
    s.header_timeout = 0.5
    s.start()
    try:
        with socket.create_connection(("127.0.0.1", s.port), timeout=5) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\n")
            answer = b""
            while not answer:
                sock.sendall(b"x")
                sock.settimeout(0.2)
                with contextlib.suppress(TimeoutError):
                    answer = sock.recv(4096)
            assert answer.startswith(b"HTTP/1.1 408 ")
        assert count(metrics, "spiffe_bridge_metadata_refusals_total", endpoint="test",
                     reason="slow") == 1
    finally:
        s.stop()


def test_at_the_cap_a_half_sent_connection_makes_room(metrics: Metrics) -> None:
    """Connections that sent part of a head are cut for a newcomer (counted `evicted`);
    a request being served is not."""
    s = Fixed("127.0.0.1:0", metrics=metrics, max_connections=2)
    s.start()
    slow = [socket.create_connection(("127.0.0.1", s.port), timeout=5) for _ in range(2)]
    try:
        for sock in slow:
            sock.sendall(b"GET / HTTP/1.1\r\nHo")
        deadline = time.monotonic() + 5
        while s.open_connections < 2:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert call(s.port)[0] == 200
        assert count(metrics, "spiffe_bridge_metadata_refusals_total", endpoint="test",
                     reason="evicted") == 1
        slow[0].settimeout(5)
        assert slow[0].recv(4096) == b""  # the oldest was cut
    finally:
        for sock in slow:
            sock.close()
        s.stop()
