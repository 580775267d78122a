"""Value checks shared by every config section (the root's, the serving keys', each
cloud's): each returns None or a message that names the problem without echoing more
than a clipped copy of the value."""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from urllib.parse import SplitResult, urlsplit

_SPIFFE_ID = re.compile(r"spiffe://[a-z0-9._-]{1,255}(/[A-Za-z0-9._-]+)*", re.ASCII)
_PORT = re.compile(r"\d{1,5}", re.ASCII)


def check_spiffe_id(v: str) -> str | None:
    """A canonical SPIFFE ID (lower-case trust domain, no empty, `.` or `..` segments)."""
    segments = v.removeprefix("spiffe://").split("/")[1:]
    if _SPIFFE_ID.fullmatch(v) and not {".", ".."} & set(segments) and len(v) <= 2048:
        return None
    return f"{clip(v)} is not a SPIFFE ID (spiffe://trust-domain/path)"


def split_url(v: str) -> SplitResult | None:
    try:
        parts = urlsplit(v)
        _ = parts.port  # raises on a malformed port
    except ValueError:
        return None
    return parts


def check_unix_uri(v: str) -> str | None:
    """`unix:///absolute/path`, short enough for AF_UNIX."""
    parts = split_url(v)
    if parts is None:
        return f"{clip(v)} is not a valid URI: use unix:///absolute/path"
    if parts.scheme != "unix":
        return f"{clip(v)} must be a unix:///absolute/path URI"
    if parts.netloc or parts.query or parts.fragment or not parts.path.startswith("/"):
        return f"{clip(v)} must be unix:///absolute/path (no host, query or fragment)"
    if len(parts.path.encode()) > 107:
        return "socket path is longer than the 107-byte unix socket limit"
    return None


def check_abs_path(v: str) -> str | None:
    """An absolute path without `..`, newlines or NUL."""
    if not v.startswith("/"):
        return f"{clip(v)} must be an absolute path"
    if ".." in Path(v).parts:
        return f"{clip(v)} must not contain '..'"
    if "\n" in v or "\x00" in v:
        return "must not contain newlines or NUL bytes"
    return None


def check_host_port(v: str) -> str | None:
    """`HOST:PORT` with an IP literal (or localhost): nothing to resolve."""
    host, sep, port = v.rpartition(":")
    host = host.strip("[]")
    if not sep or not _PORT.fullmatch(port) or not 0 <= int(port) <= 65535:
        return f"{clip(v)} must be HOST:PORT (e.g. 127.0.0.1:9464)"
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if host != "localhost":
            return f"{clip(v)}: the host must be an IP address or localhost"
    return None


def is_loopback_host(host: str) -> bool:
    """`localhost`, or an IP literal on the loopback network."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_loopback_address(v: str) -> str | None:
    """`HOST:PORT` on loopback: local listeners never face the network."""
    if message := check_host_port(v):
        return message
    host = v.rpartition(":")[0]
    if not is_loopback_host(host):
        return f"{clip(v)} must be a loopback address (127.0.0.1, [::1] or localhost)"
    return None


def check_endpoint(v: str) -> str | None:
    """An https URL, or plain http to a loopback host (the dev stack, a local proxy).

    The host judged is the one the HTTP client connects to: urllib3 (under botocore and
    requests) and urllib.parse must agree on it, so `http://other:80\\@127.0.0.1/`
    (urllib3 stops the authority at the backslash) cannot pass as loopback. Userinfo and
    backslashes are refused outright: an endpoint has no use for either.
    """
    problem = _endpoint_problem(v)
    return f"{clip(v)} {problem}" if problem else None


def _endpoint_problem(v: str) -> str | None:
    if "\\" in v:
        return "must be an https:// URL without backslashes"
    parts = split_url(v)
    if parts is None or any(c.isspace() or ord(c) < 0x20 for c in v):
        return "is not a valid URL"
    if "@" in parts.netloc:
        return "must be an https:// URL without userinfo (user@ before the host)"
    host = _client_host(v)
    if host is None or (parts.hostname or "") != host:
        return "is not a valid URL (its host is ambiguous)"
    if (parts.scheme == "https" and host) or (
            parts.scheme == "http" and host and is_loopback_host(host)):
        return None
    return "must be an https:// URL (plain http is allowed only on loopback)"


def _client_host(v: str) -> str | None:
    """The host urllib3 would connect to (lower case, IPv6 without brackets), or None."""
    from urllib3.exceptions import LocationParseError
    from urllib3.util import parse_url  # deferred: the SDKs' HTTP layer, loaded by them

    try:
        host = parse_url(v).host
    except LocationParseError:
        return None
    return host.strip("[]").lower() if host else None


def clip(v: str) -> str:
    """A user value for a message: repr'd (control characters shown) and at most 80 chars."""
    text = repr(v[:81])  # never the repr of a whole multi-megabyte value
    return text if len(text) <= 80 else text[:77] + "..."


def check_audience(v: str) -> str | None:
    """A JWT audience: non-empty, no surrounding whitespace, at most 255 characters."""
    if not v.strip() or v != v.strip():
        return "must be a non-empty string without surrounding whitespace"
    return None if len(v) <= 255 else "must be at most 255 characters"
