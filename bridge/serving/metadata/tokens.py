"""Shared secrets of the local endpoints that must outlive a config reload.

The AWS container endpoint hands its callers a token through a file; a reload that
restarts the listener must keep the token, or a client that read the file just before
would be refused. The supervisor owns one `LocalTokens` for the process and every
daemon generation it builds uses it.
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
from pathlib import Path

from bridge.outputs import atomic

log = logging.getLogger(__name__)


class LocalTokens:
    """One random token per token file for the life of the process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tokens: dict[Path, str] = {}

    def token_for(self, path: Path) -> str:
        with self._lock:
            return self._tokens.setdefault(path, secrets.token_urlsafe(32))


def write_token_file(path: Path, token: str) -> None:
    """Atomically, 0600, no trailing newline (botocore refuses a value with CR or LF);
    missing parents are created 0700 (existing ones are left as they are). Raises
    OutputError."""
    missing: list[Path] = []
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        missing.append(parent)
        parent = parent.parent
    for directory in reversed(missing):
        with atomic.open_dir(directory.parent) as fd:
            atomic.ensure_dir(fd, directory.name)
    with atomic.open_dir(path.parent) as fd:
        atomic.write_file(fd, path.name, token.encode())
    log.debug("wrote a local endpoint token to %s", os.fspath(path))
