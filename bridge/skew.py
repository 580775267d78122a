"""The clouds' clock, learnt from the `Date` header of every STS/IAM answer.

Expiries are written on clocks we do not control: a cloud's `Expiration`, the SPIRE
server's `exp`. Every answer's `Date` (1 s resolution) pins the cloud's time to our
monotonic clock (`server = monotonic + offset`, taken at the request's midpoint), so
`cloud_now()` stays right when this host's wall clock is stepped or runs wrong after
the measurement. The skew (the clouds' time minus ours) is exported live per service
and warned about beyond the JWT leeway, because SDKs on this host compare expiries with
the host's clock: that one the operator must fix (NTP).

`lifetime(expiry, date, ...)` turns an absolute expiry from an answer into seconds left,
from that answer's own clock, so no local clock is involved at all.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC
from email.utils import parsedate_to_datetime

log = logging.getLogger(__name__)
WARN_ABOVE = 60.0  # seconds: the JWT leeway; beyond it, tokens start failing
DATE_RESOLUTION = 1.0  # `Date` has whole seconds: what we derive from it errs early by this


class ClockSkew:
    """The clouds' clock against ours; thread-safe (hops run in worker threads)."""

    def __init__(self, publish: Callable[[str, Callable[[], float]], None] | None = None, *,
                 wall: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        """`publish(service, skew)` is called once per new service with a function that
        gives its live skew (a gauge's `set_function`)."""
        self._publish = publish or (lambda _service, _skew: None)
        self._wall = wall
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._offsets: dict[str, float] = {}  # service -> server time minus monotonic
        self._latest: float | None = None
        self._warned: set[str] = set()

    def observe(self, service: str, date: object, sent: float, received: float) -> None:
        """Record one answer: `date` is its Date header, `sent`/`received` our wall times."""
        server = parse_http_date(date)
        if server is None:
            return
        wall, mono = self._wall(), self._monotonic()
        midpoint = mono - (wall - (sent + received) / 2)
        offset = server - midpoint
        with self._lock:
            new = service not in self._offsets
            self._offsets[service] = offset
            self._latest = offset
        if new:
            self._publish(service, lambda: self.skew(service) or 0.0)
        skew = self.skew(service) or 0.0
        if abs(skew) > WARN_ABOVE and service not in self._warned:
            self._warned.add(service)
            log.warning("clock skew against %s is %+.0fs (its Date header vs this host): "
                        "fix NTP; SDKs on this host will misjudge expiries and JWT-SVIDs may "
                        "be refused as not yet valid or expired", service, skew)
        elif abs(skew) <= WARN_ABOVE:
            self._warned.discard(service)

    def cloud_now(self, service: str | None = None) -> float | None:
        """`service`'s current time as last measured (any service's when None or not
        measured yet), carried on the monotonic clock; None before any `Date`."""
        with self._lock:
            offset = self._offsets.get(service, self._latest) if service else self._latest
        return None if offset is None else self._monotonic() + offset

    def skew(self, service: str) -> float | None:
        """The clouds' time minus this host's wall clock, now (None: never measured)."""
        with self._lock:
            offset = self._offsets.get(service)
        return None if offset is None else self._monotonic() + offset - self._wall()

    def get(self, service: str) -> float | None:
        return self.skew(service)


def lifetime(expiry: float, date: object, *, fallback_now: float) -> float:
    """Seconds an answer's absolute `expiry` leaves, by the answer's own clock: its
    `Date` (less its resolution), or `fallback_now` when it has none."""
    server = parse_http_date(date)
    if server is None:
        return expiry - fallback_now
    return expiry - server - DATE_RESOLUTION


def parse_http_date(date: object) -> float | None:
    if not isinstance(date, str) or not date:
        return None
    try:
        parsed = parsedate_to_datetime(date)
        if parsed.tzinfo is None:  # "-0000": UTC by RFC 5322, naive to Python
            parsed = parsed.replace(tzinfo=UTC)
        return parsed.timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
