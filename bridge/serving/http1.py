"""HTTP/1.1 request heads as the bridge's listeners read them: one strict parser, and the
`Request` and `Reply` every handler sees.

Strict because every listener is a security boundary, and a lenient parser is where
smuggled headers hide: a header line without a colon, a space before the colon, a
folded line, a bare CR or LF, or two different `Content-Length`s are each a 400
(`HeadError`), never guessed at. The parser is pure (bytes in, a `Request` or a
`HeadError` out) so a property test can drive it with anything.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import parse_qs

_TEXT = "text/plain; charset=utf-8"
MAX_HEAD = 16384  # bytes, request line and headers together
MAX_HEADERS = 64
KNOWN_METHODS = frozenset({"GET", "HEAD", "PUT", "POST", "DELETE"})
_TOKEN = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_VALUE = re.compile(rb"[\t\x20-\x7e\x80-\xff]*")
_VERSION = re.compile(rb"HTTP/1\.[01]")


class HeadError(Exception):
    """A request head that must not be served: the status to answer, then close."""

    def __init__(self, status: int, why: str) -> None:
        super().__init__(why)
        self.status = status
        self.why = why  # a fixed phrase: never quotes what the caller sent


class Headers:
    """Header fields in the order sent; names compared case-insensitively."""

    __slots__ = ("_fields",)

    def __init__(self, fields: list[tuple[str, str]]) -> None:
        self._fields = fields

    def get(self, name: str, default: str | None = None) -> str | None:
        """The first value of `name` (as `email.message.Message.get` does)."""
        lower = name.lower()
        return next((v for k, v in self._fields if k.lower() == lower), default)

    def get_all(self, name: str) -> list[str]:
        lower = name.lower()
        return [v for k, v in self._fields if k.lower() == lower]

    def keys(self) -> list[str]:
        return [k for k, _ in self._fields]

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def __len__(self) -> int:
        return len(self._fields)


@dataclass(slots=True)
class Request:
    """What a handler sees: method, path and raw query apart, headers as parsed, and the
    lower-cased header names in order (one pass; `count` spots a repeated header)."""

    method: str
    path: str
    query: str
    headers: Headers
    names: list[str]
    version: str = "HTTP/1.1"

    def single(self, name: str) -> str | None:
        """The value of a header sent exactly once (None if absent or repeated)."""
        if self.names.count(name.lower()) != 1:
            return None
        return self.headers.get(name)

    def param(self, name: str) -> str | None:
        values = parse_qs(self.query).get(name)
        return values[-1] if values else None

    @property
    def keep_alive(self) -> bool:
        connection = ",".join(self.headers.get_all("Connection")).lower()
        if self.version == "HTTP/1.0":
            return False
        return "close" not in (t.strip() for t in connection.split(","))


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    body: bytes = b""
    content_type: str = _TEXT
    headers: tuple[tuple[str, str], ...] = ()
    refusal: str | None = None  # metric reason when the caller was turned away
    close: bool = False


def head_end(buffer: bytes | bytearray) -> int:
    """Where the head in `buffer` ends (index past its blank line), or -1 if not yet."""
    end = buffer.find(b"\r\n\r\n")
    return -1 if end < 0 else end + 4


def parse_head(head: bytes) -> Request:
    """A complete head (ending in CRLF CRLF) as a `Request`, or `HeadError`."""
    if len(head) > MAX_HEAD:
        raise HeadError(431, "request head too large")
    if not head.endswith(b"\r\n\r\n"):
        raise HeadError(400, "incomplete request head")
    lines = head[:-4].split(b"\r\n")
    if any(b"\r" in line or b"\n" in line for line in lines):
        raise HeadError(400, "bare CR or LF in the request head")
    method, target, version = _request_line(lines[0])
    fields = [_field(line) for line in lines[1:]]
    if len(fields) > MAX_HEADERS:
        raise HeadError(431, "too many header fields")
    names = [k.lower() for k, _ in fields]
    lengths = {v for k, v in fields if k.lower() == "content-length"}
    if len(lengths) > 1:
        raise HeadError(400, "conflicting Content-Length")
    path, _, query = target.partition("?")
    return Request(method, path, query, Headers(fields), names, version)


def _request_line(line: bytes) -> tuple[str, str, str]:
    parts = line.split(b" ")
    if len(parts) != 3 or not all(parts):
        raise HeadError(400, "malformed request line")
    method, target, version = parts
    if not _TOKEN.fullmatch(method):
        raise HeadError(400, "malformed method")
    if not _VERSION.fullmatch(version):
        if version.startswith(b"HTTP/") and re.fullmatch(rb"HTTP/\d\.\d", version):
            raise HeadError(505, "HTTP version not supported")
        raise HeadError(400, "malformed HTTP version")
    if not re.fullmatch(rb"[\x21-\x7e]+", target):
        raise HeadError(400, "malformed request target")
    if method.decode() not in KNOWN_METHODS:
        raise HeadError(501, "method not implemented")
    return method.decode(), target.decode("ascii"), version.decode()


def _field(line: bytes) -> tuple[str, str]:
    """`Name: value`: no whitespace in or before the name (a space before the colon is
    how `X-Forwarded-For : x` slips past a proxy check), no folding, no controls."""
    name, colon, value = line.partition(b":")
    if not colon:
        raise HeadError(400, "header line without a colon")
    if not _TOKEN.fullmatch(name):
        raise HeadError(400, "malformed header name")
    value = value.lstrip(b" \t")  # trailing blanks stay: `Google ` is not `Google`
    if not _VALUE.fullmatch(value):
        raise HeadError(400, "control character in a header value")
    return name.decode("ascii"), value.decode("latin-1")
