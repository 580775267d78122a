"""A deterministic AWS RoleSessionName from a SPIFFE ID.

STS allows 2-64 characters of `[\\w+=,.@-]`; SPIFFE IDs contain `/` and `:` and may run
to 2048 bytes. We keep the most specific (rightmost) readable part so CloudTrail stays
legible, and append a hash of the whole ID so two IDs never share a name.
"""

from __future__ import annotations

import functools
import hashlib
import re

_DISALLOWED = re.compile(r"[^\w+=,.@-]", re.ASCII)
_HASH_LEN = 10
_MAX = 64


@functools.lru_cache(maxsize=4096)  # pure; called on every exchange
def session_name(spiffe_id: str) -> str:
    digest = hashlib.sha256(spiffe_id.encode()).hexdigest()[:_HASH_LEN]
    body = spiffe_id.removeprefix("spiffe://")
    readable = _DISALLOWED.sub(".", body.replace("/", ".")).strip(".")
    room = _MAX - _HASH_LEN - 1
    if len(readable) > room:
        readable = readable[-room:].lstrip(".-")
    return f"{readable}-{digest}" if readable else f"spiffe-{digest}"
