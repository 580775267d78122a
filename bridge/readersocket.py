"""Where a daemon's reader socket is, and how a file is asked for on it: shared by the
daemon (`serving.reader`) and the stdlib-only `credential-process` path (`cli.fast`),
so this module imports nothing but `os`."""

from __future__ import annotations

import os

PREFIX = "/v1/files/"


def reader_socket(grpc_socket: str) -> str:
    """The reader socket of a daemon whose gRPC socket file is `grpc_socket`: beside it,
    named after it (`bridge.sock` -> `bridge.files.sock`), so two daemons that share a
    directory never share a reader socket."""
    directory, name = os.path.split(grpc_socket)
    stem = name.rsplit(".", 1)[0] if "." in name.lstrip(".") else name
    return os.path.join(directory, f"{stem}.files.sock")
