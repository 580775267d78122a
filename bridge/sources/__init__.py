"""Where JWT-SVIDs come from. The daemon needs only `fetch`; the Workload API is the one
real implementation, and tests may pass anything of this shape."""

from __future__ import annotations

from typing import Protocol

from spiffe import JwtBundleSet

from bridge.model import JwtSvid


class SvidSource(Protocol):
    def fetch(self, audience: str, spiffe_id: str | None, judge: str | None = None) -> JwtSvid:
        """Return a fresh, checked JWT-SVID for one audience (blocking; raises SourceError).

        `judge`: the service (a `ClockSkew` name) that will judge it: its time and
        lifetime are reckoned by that service's clock when it is known."""
        ...

    def jwt_bundles(self) -> JwtBundleSet | None:
        """The JWT bundles last received (to verify callers' SVIDs), None before any."""
        ...

    def close(self) -> None: ...


__all__ = ["SvidSource"]
