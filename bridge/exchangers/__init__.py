"""Hops that turn one credential into the next (JWT-SVID -> AWS role, ...).

Each hop is blocking (the SDKs are) and runs in a worker thread; it raises
ExchangeError classified as retryable or permanent at its own edge.
"""

from __future__ import annotations

from typing import Protocol

from bridge.model import AwsCredentials, JwtSvid


class WebIdentityHop(Protocol):
    name: str

    def exchange(self, svid: JwtSvid) -> AwsCredentials: ...
