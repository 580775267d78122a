"""The bridge's exception tree: one root, classified at the adapter edge.

    BridgeError                  root; `retryable` says whether trying again may help
    ├── ConfigError (ValueError) bad configuration; carries every problem with its key path
    ├── SourceError              the Workload API (SVID fetch, bundles, local SVID checks)
    ├── ExchangeError            a cloud token service refused or failed an exchange
    ├── OutputError              writing a credential output failed
    ├── ServingError             a listener (gRPC, HTTP, metadata) could not start
    ├── PermanentFailureError    a target needs a fix and the operator asked to stop
    └── ApiError                 a call to the bridge's own gRPC API failed (the client)

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

    `hop` names the hop kind, `code` the service's own error code, `position` where in a
    chain it happened ("hop 2/3"), and `fresh_svid` asks the caller to fetch a new
    JWT-SVID before retrying.
    """

    prefix = "exchange"

    def __init__(
        self,
        message: str,
        *,
        hop: str,
        code: str,
        retryable: bool,
        reason: str,
        fresh_svid: bool = False,
        position: str = "",
        retry_after: float | None = None,
    ) -> None:
        where = f"{position} {hop}" if position else hop
        super().__init__(f"{where}: {code}: {message}", retryable=retryable, reason=reason)
        self.message = message
        self.hop = hop
        self.code = code
        self.fresh_svid = fresh_svid
        self.position = position
        self.retry_after = retry_after  # seconds the service asked us to wait (Retry-After)

    def at(self, position: int, total: int) -> ExchangeError:
        """The same error, labelled with where it happened in a chain."""
        return ExchangeError(self.message, hop=self.hop, code=self.code,
                             retryable=self.retryable, reason=self.reason,
                             fresh_svid=self.fresh_svid, position=f"hop {position}/{total}",
                             retry_after=self.retry_after)


def retry_after(value: object) -> float | None:
    """A `Retry-After` header in seconds (delta-seconds form; an HTTP date or garbage is
    None: the budget's own backoff then applies)."""
    try:
        seconds = float(str(value).strip())
    except ValueError:
        return None
    return seconds if 0 <= seconds < float("inf") else None


class OutputError(BridgeError):
    """An output could not be written; the previous file stays in place."""

    prefix = "output"


class ServingError(BridgeError):
    """A listener (gRPC socket or port, metadata or health HTTP) could not be set up."""

    prefix = "serving"


class PermanentFailureError(BridgeError):
    """A target needs a config or IAM fix and the operator asked to stop, not retry
    (`refresh.exit_on_permanent_failure`)."""

    prefix = "permanent failure"


class ApiError(BridgeError):
    """A call to the bridge's gRPC API failed; `code` is the gRPC status name
    (PERMISSION_DENIED, UNAVAILABLE, ...)."""

    prefix = "spiffe-bridge API"

    def __init__(self, code: str, details: str) -> None:
        super().__init__(f"{code}: {details}",
                         retryable=code in {"UNAVAILABLE", "DEADLINE_EXCEEDED"},
                         reason=code.lower())
        self.code = code
