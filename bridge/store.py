"""The credential store: one immutable `TargetStatus` per target, replaced whole.

Readers (file output, gRPC, status) take `snapshot()` and never block a refresh or
trigger one; writers are the scheduler's refresh jobs. Listeners are called after every
change so outputs can catch up (they coalesce; they always read the newest snapshot).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from types import MappingProxyType

from bridge.model import Credential, JwtSvid, State, TargetStatus
from bridge.x509_svid import X509Svid

Listener = Callable[[str, TargetStatus], None]


class CredentialStore:
    def __init__(self, targets: Iterable[str]) -> None:
        self._lock = threading.Lock()
        self._statuses: dict[str, TargetStatus] = {n: TargetStatus(name=n) for n in targets}
        self._listeners: list[Listener] = []

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def unsubscribe(self, listener: Listener) -> None:
        with contextlib.suppress(ValueError):
            self._listeners.remove(listener)

    def reconfigure(self, names: Iterable[str], keep: Iterable[str]) -> None:
        """Hold exactly `names` from now on (a reload): the statuses of `keep` carry over,
        every other target starts afresh, and removed ones are gone."""
        names, keep = list(names), set(keep)
        with self._lock:
            old = self._statuses
            self._statuses = {n: old[n] if n in keep and n in old else TargetStatus(name=n)
                              for n in names}
            changed = [s for n, s in self._statuses.items() if old.get(n) is not s]
        for status in changed:
            for listener in self._listeners:
                listener(status.name, status)

    def snapshot(self) -> Mapping[str, TargetStatus]:
        with self._lock:
            return MappingProxyType(dict(self._statuses))

    def get(self, name: str) -> TargetStatus | None:
        with self._lock:
            return self._statuses.get(name)

    def succeeded(self, name: str, credential: Credential, now: float) -> TargetStatus:
        return self._update(name, lambda s: replace(
            s, state=State.FRESH, credential=credential, last_success=now, last_error=None,
            last_error_detail=None, last_error_permanent=False, consecutive_failures=0,
            delivered=True))

    def failed(self, name: str, reason: str, detail: str, now: float, *,
               permanent: bool) -> TargetStatus:
        def change(s: TargetStatus) -> TargetStatus:
            state = State.STALE if s.valid_credential(now) else State.EXPIRED
            return replace(s, state=state, last_error=reason, last_error_detail=detail,
                           last_error_permanent=permanent,
                           consecutive_failures=s.consecutive_failures + 1,
                           credential=s.valid_credential(now))
        return self._update(name, change)

    def seed(self, status: TargetStatus) -> None:
        """Start from a status a previous configuration held (SIGHUP reload)."""
        with self._lock:
            self._statuses[status.name] = status

    def recovered(self, name: str, credential: Credential) -> TargetStatus:
        """Seed a credential a previous run wrote: served as stale until refreshed, and
        delivered (ready): its files are in place, and with refreshes spread over the
        safe window its first refresh may be many minutes away."""
        return self._update(name, lambda s: replace(s, state=State.STALE, credential=credential,
                                                    delivered=True))

    def svid_updated(self, name: str, svid: JwtSvid | X509Svid) -> TargetStatus:
        return self._update(name, lambda s: replace(s, svid=svid))

    def expire(self, name: str, now: float) -> TargetStatus:
        """Drop a credential whose real expiry has passed; never hand it out again."""
        def change(s: TargetStatus) -> TargetStatus:
            if s.valid_credential(now):
                return s
            return replace(s, state=State.EXPIRED, credential=None)
        return self._update(name, change)

    def redate(self, offset: float) -> None:
        """Re-express every held expiry for a host clock `offset` (wall minus monotonic)
        ahead of the monotonic one: it stepped, and what is written and served next
        must be in its new terms (idempotent; deadlines never move)."""
        with self._lock:
            old = self._statuses
            self._statuses = {n: _redated(s, offset) for n, s in old.items()}
            changed = [s for n, s in self._statuses.items() if old[n] is not s]
        for status in changed:
            for listener in self._listeners:
                listener(status.name, status)

    def _update(self, name: str, change: Callable[[TargetStatus], TargetStatus]) -> TargetStatus:
        with self._lock:
            old = self._statuses.get(name)
            if old is None:  # a reload removed it while its last refresh was finishing
                return TargetStatus(name=name)
            new = change(old)
            self._statuses[name] = new
        if new != old:
            for listener in self._listeners:
                listener(name, new)
        return new


def _redated(s: TargetStatus, offset: float) -> TargetStatus:
    credential = s.credential.in_terms_of(offset) if s.credential else None
    svid = s.svid.in_terms_of(offset) if s.svid else None
    if credential is s.credential and svid is s.svid:
        return s
    return replace(s, credential=credential, svid=svid)
