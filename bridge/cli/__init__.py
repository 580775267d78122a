"""`spiffe-bridge` command line: thin; parses, loads, wires, runs, maps errors to exit
codes (0 ok, 1 runtime failure, 2 usage or configuration error).

    full      the parser and the error-to-exit-code mapping (`main`); its `entry`
    commands  run, once, check, dev
    readers   credential-process and status, which read from a running daemon
    fast      credential-process on the standard library alone, tried first

Nothing is imported here eagerly: `credential-process` must start as fast as a bare
interpreter, and the full CLI costs the config loader, grpc and asyncio.
"""

from __future__ import annotations

import sys


def entry() -> None:  # never returns; no `typing` here, it costs this path 4 ms
    """The `spiffe-bridge` executable: `credential-process` on the fast path when it
    can answer alone, else the full CLI (`full.entry`)."""
    argv = sys.argv[1:]
    if argv[:1] == ["credential-process"]:
        from bridge.cli.fast import credential_process

        code = credential_process(argv[1:])
        if code is not None:
            raise SystemExit(code)
    from bridge.cli.full import entry as full

    full()


def __getattr__(name: str) -> object:
    if name == "main":  # `main(argv)`, the full CLI (tests and embedders call it)
        from bridge.cli.full import main

        return main
    raise AttributeError(name)


__all__ = ["entry"]  # and `main`, loaded when asked for (`__getattr__`)
