"""`spiffe-bridge` command line: thin; parses, loads, wires, runs, maps errors to exit
codes (0 ok, 1 runtime failure, 2 usage or configuration error).

    main      the parser and the error-to-exit-code mapping; `entry`, the executable
    commands  run, once, check, dev
    readers   credential-process and status, which read from a running daemon
"""

from __future__ import annotations

from bridge.cli.main import entry, main

__all__ = ["entry", "main"]
