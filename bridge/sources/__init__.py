"""Where JWT-SVIDs come from. The daemon needs only `fetch`; the Workload API is the one
real implementation, and tests may pass anything of this shape."""

from __future__ import annotations

from typing import Protocol

from spiffe import JwtBundleSet

from bridge.model import JwtSvid
from bridge.x509_svid import X509Svid


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


class X509Svids(Protocol):
    """Where X.509-SVIDs come from (`sources.x509`, or anything of this shape)."""

    def fetch(self, spiffe_id: str | None) -> X509Svid:
        """The current X.509-SVID for `spiffe_id` (blocking; raises SourceError)."""
        ...

    def current(self, spiffe_id: str | None) -> str | None:
        """The leaf fingerprint last streamed for `spiffe_id` (None before any)."""
        ...

    def close(self) -> None: ...


__all__ = ["SvidSource", "X509Svids"]
