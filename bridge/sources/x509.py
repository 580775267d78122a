"""X.509-SVIDs from the SPIFFE Workload API, through py-spiffe's `X509Source`.

The agent streams X.509 contexts (every SVID of the workload and the bundles) and
sends a new one as soon as an SVID rotates; `X509Source` keeps the latest in memory
and calls its subscribers. This adapter adds what the daemon needs on top:

- lazy (re)connection: py-spiffe raises at construction when the socket does not exist
  yet, and an `X509Source` closes itself for good after a stream error;
- the SVID per target by SPIFFE ID (the context holds all of them; none: the default);
- an expiry margin (10 s: the SVID only signs a request that is checked at once; the
  agent renews at half its life), judged from the moment it is read;
- rotation: `on_rotated` hears of every leaf that changed (by SPIFFE ID), within the
  stream's own latency, so a target re-signs at once instead of at its next refresh.

The private key stays the `cryptography` object py-spiffe parsed: never written, never
logged (`X509Svid`'s repr hides it).
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from cryptography.hazmat.primitives.serialization import Encoding
from spiffe import WorkloadApiClient, X509Source
from spiffe.errors import PySpiffeError

from bridge.errors import SourceError
from bridge.sources.workload_api import _classify, _safe
from bridge.x509_svid import X509Svid

log = logging.getLogger(__name__)
_DER = Encoding.DER
DEFAULT = ""  # the key of "no spiffe_id asked": the context's default SVID


class X509SvidSource:
    """Hands out the current X.509-SVID per SPIFFE ID; follows rotations.

    py-spiffe's `X509Source` keeps one SVID of the context (its picker's), so each SPIFFE
    ID asked for has its own source (and stream); the picker never raises (a raising
    picker closes the source for good): without the ID it keeps the default SVID, and
    `fetch` says the ID is not issued."""

    def __init__(
        self,
        socket: str,
        *,
        timeout: float,
        min_remaining: float = 10.0,
        now: Callable[[], float],
        monotonic: Callable[[], float] = time.monotonic,
        on_up: Callable[[bool], None] | None = None,
        on_rotated: Callable[[set[str]], None] | None = None,
    ) -> None:
        self._socket = socket
        self._timeout = timeout
        self._min_remaining = min_remaining
        self._now = now
        self._monotonic = monotonic
        self._on_up = on_up or (lambda _up: None)
        self._on_rotated = on_rotated or (lambda _ids: None)
        self._lock = threading.Lock()
        self._sources: dict[str, tuple[Any, Any]] = {}  # key -> (X509Source, its client)
        self._leaves: dict[str, str] = {}  # spiffe id (or DEFAULT) -> leaf fingerprint

    def fetch(self, spiffe_id: str | None) -> X509Svid:
        """The current X.509-SVID for `spiffe_id` (the default one for None); blocking,
        raises a classified SourceError."""
        key = spiffe_id or DEFAULT
        source = self._connect(key)
        try:
            context = source.get_x509_context()
        except PySpiffeError as exc:
            self._drop(key, source)
            error = _classify(exc)
            self._on_up(False)
            raise error from None
        svid = context.default_svid
        if spiffe_id and str(svid.spiffe_id) != spiffe_id:
            self._on_up(True)
            raise SourceError(f"the agent issued no X.509-SVID for {spiffe_id}", retryable=True,
                              reason="no_identity")
        self._on_up(True)
        return self._convert(svid, context)

    def current(self, spiffe_id: str | None) -> str | None:
        """The fingerprint of the leaf the stream last delivered for `spiffe_id`."""
        with self._lock:
            return self._leaves.get(spiffe_id or DEFAULT)

    def _convert(self, svid: Any, context: Any) -> X509Svid:
        chain = tuple(c.public_bytes(_DER) for c in svid.cert_chain)
        leaf = svid.leaf
        now, mono = self._now(), self._monotonic()
        not_after = leaf.not_valid_after_utc.timestamp()
        not_before = leaf.not_valid_before_utc.timestamp()
        left = not_after - now
        if left < self._min_remaining:
            raise SourceError(
                f"X.509-SVID for {svid.spiffe_id} expires in {left:.0f}s, less than the "
                f"{self._min_remaining:.0f}s margin (agent cannot renew it?)",
                retryable=True, reason="svid_expiring")
        bundle = context.x509_bundle_set.get_bundle_for_trust_domain(svid.spiffe_id.trust_domain)
        authorities = tuple(sorted(a.public_bytes(_DER) for a in bundle.x509_authorities)) \
            if bundle is not None else ()
        return X509Svid(spiffe_id=str(svid.spiffe_id), chain=chain,
                        private_key=svid.private_key, expires_at=not_after,
                        issued_at=not_before, bundle=authorities, deadline=mono + left)

    def _connect(self, key: str) -> Any:
        with self._lock:
            held = self._sources.get(key)
        if held is not None and not held[0].is_closed():
            return held[0]
        try:
            client = WorkloadApiClient(self._socket)
            source = X509Source(workload_api_client=client, timeout_in_seconds=self._timeout,
                                svid_picker=_picker(key))
        except PySpiffeError as exc:
            self._on_up(False)
            raise SourceError(f"cannot get X.509-SVIDs from the agent at {self._socket}: "
                              f"{_safe(exc)}", retryable=True, reason="unavailable") from None
        with self._lock:
            old = self._sources.get(key)
            self._sources[key] = (source, client)
        for stale in old or ():
            stale.close()
        source.subscribe_for_updates(lambda: self._updated(key, source))
        self._updated(key, source)
        return source

    def _updated(self, key: str, source: Any) -> None:
        """A new X.509 context arrived (py-spiffe's thread): did this key's leaf change."""
        try:
            svid = source.get_x509_context().default_svid
        except PySpiffeError:
            return
        if key != DEFAULT and str(svid.spiffe_id) != key:
            return
        leaf = _fingerprint(svid)
        with self._lock:
            held = self._sources.get(key)
            if held is None or held[0] is not source:
                return
            previous = self._leaves.get(key)
            self._leaves[key] = leaf
        if previous is not None and previous != leaf:
            log.info("X.509-SVID rotated for %s", key or "(default)")
            self._on_rotated({key})

    def _drop(self, key: str, source: Any) -> None:
        with self._lock:
            held = self._sources.get(key)
            if held is not None and held[0] is source:
                del self._sources[key]
        source.close()
        if held is not None:
            held[1].close()

    def close(self) -> None:
        with self._lock:
            held, self._sources = list(self._sources.values()), {}
        for source, client in held:
            source.close()
            client.close()


def _picker(key: str) -> Callable[[list[Any]], Any]:
    """Picks the SVID of `key` (the first, py-spiffe's default, for DEFAULT or when it
    is not issued: `fetch` tells the two apart). Never raises."""
    def pick(svids: list[Any]) -> Any:
        return next((s for s in svids if str(s.spiffe_id) == key), svids[0])
    return pick


def _fingerprint(svid: Any) -> str:
    return hashlib.sha256(svid.leaf.public_bytes(_DER)).hexdigest()
