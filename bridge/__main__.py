"""`python -m bridge` runs the CLI."""

from bridge.cli import entry

entry()
