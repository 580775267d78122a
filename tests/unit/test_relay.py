"""The in-process byte relay: both directions copied; connections bounded."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

from bridge.relay import Opened, UnixRelay


def _echo_relay(tmp_path: Path, *, limit: int) -> tuple[UnixRelay, socket.socket]:
    """A relay whose other side is an in-process echo over a socketpair."""
    async def upstream(_sock: object) -> Opened:
        ours, theirs = socket.socketpair()

        async def echo() -> None:
            reader, writer = await asyncio.open_unix_connection(sock=theirs)
            while data := await reader.read(1024):
                writer.write(data)
                await writer.drain()
            writer.close()

        asyncio.get_running_loop().create_task(echo())
        reader, writer = await asyncio.open_unix_connection(sock=ours)
        return Opened(reader, writer)

    relay = UnixRelay(str(tmp_path / "r.sock"), upstream=upstream, max_connections=limit)
    relay.start()
    client = socket.socket(socket.AF_UNIX)
    client.settimeout(5)
    client.connect(relay.path)
    return relay, client


def test_bytes_go_both_ways(tmp_path: Path) -> None:
    relay, client = _echo_relay(tmp_path, limit=4)
    try:
        client.sendall(b"ping")
        assert client.recv(10) == b"ping"
    finally:
        client.close()
        relay.stop()
    assert not (tmp_path / "r.sock").exists()


def test_connections_past_the_bound_are_closed(tmp_path: Path) -> None:
    relay, first = _echo_relay(tmp_path, limit=1)
    second = socket.socket(socket.AF_UNIX)
    second.settimeout(5)
    try:
        first.sendall(b"a")
        assert first.recv(10) == b"a"  # the first is being relayed
        second.connect(relay.path)
        assert second.recv(10) == b""  # closed at once: over the bound
    finally:
        first.close()
        second.close()
        relay.stop()
