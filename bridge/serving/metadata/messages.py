"""What a metadata endpoint sees and answers: a parsed `Request`, a `Reply` (both
`bridge.serving.http1`'s), and the Host check every listener makes (loopback literals
or `localhost`, with its port)."""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Mapping
from typing import Any

from bridge.serving.http1 import Reply

_TEXT = "text/plain; charset=utf-8"
_JSON = "application/json"


def text(status: int, body: str, *, refusal: str | None = None,
         headers: tuple[tuple[str, str], ...] = ()) -> Reply:
    """A text/plain reply."""
    return Reply(status, body.encode(), _TEXT, headers=headers, refusal=refusal)


def json_reply(status: int, document: Mapping[str, Any], *,
               content_type: str = _JSON) -> Reply:
    """A JSON reply."""
    return Reply(status, json.dumps(document).encode(), content_type)


def host_allowed(value: str, port: int) -> bool:
    """True for `localhost`, a loopback IPv4 literal or `[loopback IPv6]`, with `:port`
    (which may be left out only when the port is 80, as clients do)."""
    split = _split_host(value)
    if split is None:
        return False
    name, port_text = split
    if port_text is None:
        port_ok = port == 80
    else:
        port_ok = port_text.isascii() and port_text.isdigit() and int(port_text) == port
    if not port_ok:
        return False
    if name.lower() == "localhost":
        return True
    try:
        ip = ipaddress.ip_address(name)
    except ValueError:
        return False
    return ip.is_loopback and (ip.version == 6) == value.startswith("[")


def _split_host(value: str) -> tuple[str, str | None] | None:
    """`name` and `port` of a Host value (None when malformed); IPv6 only bracketed."""
    if value.startswith("["):
        end = value.find("]")
        rest = value[end + 1:]
        if end < 0 or (rest and not rest.startswith(":")):
            return None
        return value[1:end], (rest[1:] if rest else None)
    name, sep, port_text = value.rpartition(":")
    if not sep:
        return value, None
    return (name, port_text) if ":" not in name else None
