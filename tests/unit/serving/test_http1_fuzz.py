"""Fuzzing the request-head parser every listener shares (`bridge.serving.http1`), alone
and behind a real listening `LoopbackServer`.

Properties: any bytes give a `Request` or a `HeadError` with a 4xx (or 501/505)
status, nothing else escapes; a line that starts a proxy header is never parsed into
something else (so `X-Forwarded-For` cannot slip past the refusal), however it is
spaced, folded or preceded; a parsed head never carries two different
`Content-Length`s; and a live listener answers every such head with a clean status
line (never a 500), refusing every one that carries a proxy header.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.serving.http1 import HeadError, Reply, Request, parse_head
from bridge.serving.metadata.http import LoopbackServer
from bridge.serving.metadata.messages import text

FUZZ = settings(max_examples=400, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])
LIVE = settings(FUZZ, max_examples=150)
CLEAN = {400, 405, 408, 421, 431, 501, 505}

NAMES = st.sampled_from([
    "Host", "X-Forwarded-For", "x-forwarded-for", "X-FORWARDED-FOR", "Forwarded",
    "X-Real-IP", "Via", "X-Forwarded-Host", "Content-Length", "Transfer-Encoding",
    "Connection", "Authorization", "X-aws-ec2-metadata-token-ttl-seconds", "Accept",
]) | st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=255), max_size=12)
SEPARATORS = st.sampled_from([": ", ":", " : ", " :", "\t:", ":\t", "", "  ", ";", "=",
                              ": \r ", ":\n "])
VALUES = st.sampled_from(["127.0.0.1:80", "203.0.113.9", "0", "5", "45", "close", "9" * 5000,
                          "Google", ""]) | st.text(
    alphabet=st.characters(min_codepoint=0, max_codepoint=255), max_size=24)
PREFIXES = st.sampled_from(["", " ", "\t", "\r", "\n", "X-Junk\r\n", "NoColon\r\n"])
REQUEST_LINES = st.sampled_from([
    "GET / HTTP/1.1", "PUT /latest/api/token HTTP/1.1", "GET /v1/credentials/x HTTP/1.0",
    "PATCH / HTTP/1.1", "GET  / HTTP/1.1", "GET / HTTP/2.0", "GET http://a/ HTTP/1.1",
    "get / HTTP/1.1", "GET /\x00 HTTP/1.1", "GET / HTTP/1.1 extra", "",
]) | st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=255), max_size=40)


@st.composite
def heads(draw: st.DrawFn, *, servable: bool = False) -> tuple[bytes, list[str]]:
    """A head built line by line from risky parts, and its raw header lines. A
    `servable` one starts as a request the listener would serve (`Host: {port}`), so
    only the risky lines can make it refused."""
    lines = []
    for _ in range(draw(st.integers(0 if not servable else 1, 8))):
        line = (draw(PREFIXES) + draw(NAMES) + draw(SEPARATORS) + draw(VALUES))
        lines.append(line)
    if servable:
        lines = draw(st.permutations(["Host: 127.0.0.1:{port}", *lines]))
    start = "GET / HTTP/1.1" if servable else draw(REQUEST_LINES)
    raw = "\r\n".join([start, *lines]) + "\r\n\r\n"
    return raw.encode("latin-1", "replace"), lines


def _proxy_line(line: str) -> bool:
    """A raw line that a lenient parser could read as a proxy header."""
    name = line.replace("\r", "\n").split("\n")[-1].lstrip(" \t").lower()
    return name.startswith(("x-forwarded-", "forwarded", "x-real-ip", "via"))


def _parse(head: bytes) -> Request | HeadError:
    try:
        return parse_head(head)
    except HeadError as exc:
        return exc


@FUZZ
@given(st.binary(max_size=2048))
def test_any_bytes_give_a_request_or_a_clean_refusal(data: bytes) -> None:
    result = _parse(data + b"\r\n\r\n")
    if isinstance(result, HeadError):
        assert result.status in CLEAN
        assert result.why.isascii()
    else:
        assert result.method in {"GET", "HEAD", "PUT", "POST", "DELETE"}


@FUZZ
@given(heads())
def test_a_proxy_header_is_never_hidden_and_lengths_never_conflict(
        built: tuple[bytes, list[str]]) -> None:
    head, lines = built
    result = _parse(head)
    if isinstance(result, HeadError):
        assert result.status in CLEAN
        return
    proxied = any(_proxy_line(line) for line in lines)
    if proxied:
        assert any(n.startswith(("x-forwarded-", "forwarded", "x-real-ip", "via"))
                   for n in result.names), "a proxy header line was parsed into another"
    assert len(set(result.headers.get_all("Content-Length"))) <= 1
    for name in result.names:
        assert name.strip() == name
        assert name
        assert ":" not in name


class _Echo(LoopbackServer):
    endpoint = "fuzz"
    methods = ("GET", "PUT")

    def handle(self, request: Request) -> Reply:
        return text(200, "ok\n")


@pytest.fixture(scope="module")
def live() -> Iterator[_Echo]:
    server = _Echo("127.0.0.1:0")
    server.start()
    yield server
    server.stop()


def _status_of(port: int, head: bytes) -> int:
    """The status a live listener answers `head` with (0: it closed without one)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(head)
        data = b""
        while b"\r\n" not in data:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    if not data:
        return 0
    version, status, _ = data.split(b" ", 2)
    assert version == b"HTTP/1.1"
    return int(status)


@LIVE
@given(heads(servable=True))
def test_a_live_listener_answers_every_head_cleanly(live: _Echo,
                                                    built: tuple[bytes, list[str]]) -> None:
    head, lines = built
    head = head.replace(b"{port}", str(live.port).encode())
    status = _status_of(live.port, head)
    assert status != 500
    assert status in {200, 403, 404, 0} | CLEAN
    if any(_proxy_line(line) for line in lines):
        assert status != 200
