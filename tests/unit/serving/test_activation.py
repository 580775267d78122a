"""Which passed socket an address adopts (serving/activation.py): by the address as a
bound socket names it, as a duplicate each time, the original kept for a later taker."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from bridge.serving import activation


@pytest.fixture
def passed(monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    """A listening socket as systemd would have passed it on 127.0.0.1."""
    with socket.create_server(("127.0.0.1", 0)) as sock:
        port = sock.getsockname()[1]
        monkeypatch.setattr(activation, "_passed", {("127.0.0.1", port): sock})
        yield sock


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "LOCALHOST"])
def test_an_address_naming_the_passed_socket_adopts_a_duplicate(
        passed: socket.socket, host: str) -> None:
    port = passed.getsockname()[1]
    for _ in range(2):  # a service re-made by a reload adopts it again
        copy = activation.take(host, port)
        assert copy is not None
        try:
            assert copy.fileno() != passed.fileno()
            assert copy.getsockname() == passed.getsockname()
        finally:
            copy.close()
    assert passed.fileno() >= 0  # the original stays open


def test_another_address_adopts_nothing(passed: socket.socket) -> None:
    port = passed.getsockname()[1]
    assert activation.take("127.0.0.2", port) is None
    assert activation.take("::1", port) is None
    assert activation.take("127.0.0.1", port + 1 if port < 65535 else port - 1) is None
