"""The owner of a loopback connection's other end, from the kernel's socket table: real
sockets over IPv4 and IPv6 loopback, and a peer that is gone."""

from __future__ import annotations

import os
import socket

import pytest

from bridge.serving.metadata.peers import peer_uid


def _pair(family: int, host: str) -> tuple[socket.socket, socket.socket, socket.socket]:
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.bind((host, 0))
    listener.listen(1)
    client = socket.create_connection(listener.getsockname()[:2], timeout=5)
    accepted, _ = listener.accept()
    return listener, client, accepted


@pytest.mark.parametrize(("family", "host"), [(socket.AF_INET, "127.0.0.1"),
                                              (socket.AF_INET6, "::1")])
def test_the_peer_of_an_accepted_loopback_connection_is_this_uid(family: int,
                                                                host: str) -> None:
    try:
        listener, client, accepted = _pair(family, host)
    except OSError:
        pytest.skip(f"no {host} here")
    with listener, client, accepted:
        assert peer_uid(accepted) == os.getuid()
        assert peer_uid(client) == os.getuid()  # the mirror row: the listener's side


def test_the_row_read_is_the_peers_not_our_own(tmp_path: object) -> None:
    """A table where only our own (mirror) row exists answers None, not our uid."""
    listener, client, accepted = _pair(socket.AF_INET, "127.0.0.1")
    with listener, client, accepted:
        ours = (accepted.getsockname(), accepted.getpeername())
        table = open("/proc/net/tcp").read().splitlines()  # noqa: SIM115
        mine = _hex(*ours[0]) + " " + _hex(*ours[1])
        kept = [line for line in table[1:] if mine in line]
        assert kept, "our accepted socket is in the table"
        fake = tmp_path / "tcp"  # type: ignore[operator]
        fake.write_text("\n".join([table[0], *kept]) + "\n")
        assert peer_uid(accepted, tables={socket.AF_INET: fake}) is None


def test_a_peer_that_has_gone_is_unknown() -> None:
    listener, client, accepted = _pair(socket.AF_INET, "127.0.0.1")
    with listener, accepted:
        client.close()
        assert peer_uid(accepted) is None


def _hex(host: str, port: int) -> str:
    return bytes(reversed(socket.inet_aton(host))).hex().upper() + f":{port:04X}"
