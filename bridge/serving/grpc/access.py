"""Who may read which target: one decision for every path that hands out credentials
by name (the gRPC API and the reader socket behind `credential-process`).

A target without `allowed_callers` is open to whoever can reach the socket; one with
them needs the caller's JWT-SVID (`callers`). An unknown and a restricted name answer an
unauthenticated caller alike while any target is restricted, so names cannot be probed.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping

from bridge.serving.grpc.callers import CallerRejected, CallerVerifier, allows
from bridge.serving.grpc.convert import ServedTarget


class Refusal(enum.Enum):
    NOT_FOUND = "not_found"
    UNAUTHENTICATED = "unauthenticated"
    PERMISSION_DENIED = "permission_denied"
    UNAVAILABLE = "unavailable"  # no bundle yet to verify callers with


class Refused(Exception):  # noqa: N818 - a verdict, not a malfunction
    def __init__(self, refusal: Refusal, detail: str) -> None:
        super().__init__(detail)
        self.refusal = refusal
        self.detail = detail


class Access:
    def __init__(self, targets: Mapping[str, ServedTarget], verifier: CallerVerifier) -> None:
        self.targets = targets
        self.verifier = verifier
        # open to anyone who reaches the socket: a call for one needs no look at its headers
        self.open = frozenset(n for n, t in targets.items() if not t.allowed_callers)

    def authorize(self, name: str, token: str) -> None:
        """Return if the caller presenting `token` ("" for none) may read `name`."""
        target = self.targets.get(name)
        if target is not None and not target.allowed_callers:
            return
        if target is None and any(t.allowed_callers for t in self.targets.values()):
            self.caller(token, required=True)  # authenticate before saying "unknown"
        if target is None:
            raise Refused(Refusal.NOT_FOUND, f"no target named {name!r}")
        caller = self.caller(token, required=True)
        if caller is None or not self.may_read(name, caller):
            raise Refused(Refusal.PERMISSION_DENIED,
                          f"{caller} is not in allowed_callers of target {name!r}")

    def may_read(self, name: str, caller: str | None) -> bool:
        allowed = self.targets[name].allowed_callers
        return not allowed or (caller is not None and any(allows(p, caller) for p in allowed))

    def caller(self, token: str, *, required: bool) -> str | None:
        """The caller's verified SPIFFE ID; None when it sent no SVID and none is needed."""
        if not token and not required:
            return None
        try:
            return self.verifier.verify(token)
        except CallerRejected as exc:
            raise Refused(Refusal.UNAVAILABLE if exc.unavailable else Refusal.UNAUTHENTICATED,
                          str(exc)) from exc
