"""`credential-process` against a running daemon that has no such target: one line
calling it unknown, naming the socket."""

from __future__ import annotations

import pytest

from bridge.devstack import DevStack
from tests.support.configs import aws_target
from tests.support.process import bridge_cli
from tests.support.running import StartBridge

pytestmark = pytest.mark.integration


def test_an_unknown_target_at_the_daemon_is_called_unknown(start_bridge: StartBridge,
                                                           socket_uri: str,
                                                           stack: DevStack) -> None:
    """A daemon whose targets are all open says a name is unknown."""
    start_bridge(targets=[aws_target(stack, "open")])
    proc = bridge_cli("credential-process", "--target", "nope", "--socket", socket_uri,
                      timeout=30)
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert proc.stderr.splitlines() == [
        f"spiffe-bridge: unknown target 'nope' (the daemon at {socket_uri} has none of that "
        "name)"]


def test_an_unknown_target_at_a_daemon_with_restricted_targets_is_unknown_or_restricted(
        start_bridge: StartBridge, socket_uri: str) -> None:
    """With restricted targets, the daemon answers an unknown and a restricted name alike
    to a caller without an SVID (names cannot be probed): the line says both, one line."""
    start_bridge()
    proc = bridge_cli("credential-process", "--target", "nope", "--socket", socket_uri,
                      timeout=30)
    assert proc.returncode == 1
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"spiffe-bridge: target 'nope' is unknown or needs a caller "
                               f"SVID at the daemon at {socket_uri}: ")
