"""Hops that turn one credential into the next (JWT-SVID -> AWS role -> GCP SA, ...).

Each hop is blocking (the SDKs are) and runs in a worker thread. It takes the previous
hop's material and raises ExchangeError, classified retryable or permanent, at its own
edge. The config loader guarantees each hop receives a material it accepts.
"""

from __future__ import annotations

from typing import Protocol

from bridge.errors import ExchangeError
from bridge.model import Material


class Hop(Protocol):
    name: str  # bounded: a metric label (aws_web_identity, aws_assume_role, gcp_sts, ...)

    def exchange(self, material: Material) -> Material: ...


def wrong_input(hop: str, material: object) -> ExchangeError:
    """A chain wired in an order the config loader should have refused."""
    return ExchangeError(f"cannot take {type(material).__name__} as input", hop=hop,
                         code="BadChain", retryable=False, reason="config")
