"""The bridge's exception tree: one root, classified at the adapter edge.

    BridgeError                 root; `retryable` says whether trying again may help
    ├── ConfigError (ValueError)  bad configuration; carries every problem with its key path
    ├── SourceError             the Workload API (SVID fetch, bundles, local SVID checks)
    ├── ExchangeError           a cloud token service refused or failed an exchange
    └── OutputError             writing a credential output failed

Messages never contain secret material: adapters build them from error codes and
their own words, never from request bodies or tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


class BridgeError(Exception):
    """Root of every error the bridge raises on purpose."""

    prefix = "bridge error"

    def __init__(self, detail: str, *, retryable: bool = False, reason: str = "error") -> None:
        super().__init__(f"{self.prefix}: {detail}")
        self.detail = detail
        self.retryable = retryable
        # A short, bounded word for metric labels and logs ("throttled", "access_denied", ...).
        self.reason = reason


@dataclass(frozen=True, slots=True)
class ConfigProblem:
    """One configuration problem at one key path (`targets[1].aws.role_arn`)."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class ConfigError(BridgeError, ValueError):
    """The configuration is invalid; `problems` lists every problem found, not just the first."""

    prefix = "invalid configuration"

    def __init__(self, problems: Sequence[ConfigProblem]) -> None:
        self.problems = tuple(problems)
        super().__init__("; ".join(str(p) for p in self.problems), reason="config")


class SourceError(BridgeError):
    """The Workload API could not give us a usable JWT-SVID or bundle."""

    prefix = "workload API"


class ExchangeError(BridgeError):
    """A token service (AWS STS, GCP STS/IAM) refused or failed an exchange.

    `hop` names the hop in the chain, `code` the service's own error code, and
    `fresh_svid` asks the caller to fetch a new JWT-SVID before retrying.
    """

    prefix = "exchange"

    def __init__(
        self,
        detail: str,
        *,
        hop: str,
        code: str,
        retryable: bool,
        reason: str,
        fresh_svid: bool = False,
    ) -> None:
        super().__init__(f"{hop}: {code}: {detail}", retryable=retryable, reason=reason)
        self.hop = hop
        self.code = code
        self.fresh_svid = fresh_svid


class OutputError(BridgeError):
    """An output could not be written; the previous file stays in place."""

    prefix = "output"
