"""Serving the store to readers: the gRPC API, cloud-metadata endpoints, health.

Every serving path reads the store and never triggers a refresh. Each is a `Service`,
started after the store is seeded and stopped before the source closes.
"""

from __future__ import annotations

from typing import Protocol


class Service(Protocol):
    """A listener that serves the store (HTTP health, gRPC, a metadata endpoint)."""

    def start(self) -> None:
        """Bind and serve; return once ready. Raises ServingError."""
        ...

    def stop(self) -> None: ...

    def describe(self) -> str:
        """One line for the log: what is served where."""
        ...

    def adopt(self, other: object) -> bool:
        """Take over what `other` (not started) was built to serve, if this running one
        listens exactly as `other` would (a reload keeps its socket); else False."""
        ...


__all__ = ["Service"]
