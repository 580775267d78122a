"""`credential-process` against a running daemon that has no such target: one line
calling it unknown, naming the socket."""

from __future__ import annotations

import pytest

from tests.support.process import bridge_cli
from tests.support.running import StartBridge

pytestmark = pytest.mark.integration


def test_an_unknown_target_at_the_daemon_is_called_unknown(start_bridge: StartBridge,
                                                           socket_uri: str) -> None:
    start_bridge()
    proc = bridge_cli("credential-process", "--target", "nope", "--socket", socket_uri,
                      timeout=30)
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert proc.stderr.splitlines() == [
        f"spiffe-bridge: unknown target 'nope' (the daemon at {socket_uri} has none of that "
        "name)"]
