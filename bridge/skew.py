"""Clock skew, estimated from the `Date` header of every cloud STS/IAM response.

Our JWT-SVIDs and the clouds' expiries are judged by clocks we do not control: an
estimate (server time minus ours at the request's midpoint; `Date` has 1 s resolution)
is exported per service so an operator sees a drifting host before tokens start being
"not yet valid" or "expired" on arrival. Like botocore's own skew estimate, it only
informs: scheduling runs on the monotonic clock and margins are minutes wide.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC
from email.utils import parsedate_to_datetime

log = logging.getLogger(__name__)
WARN_ABOVE = 60.0  # seconds: the JWT leeway; beyond it, tokens start failing


class ClockSkew:
    """The latest estimate per service; thread-safe (hops run in worker threads)."""

    def __init__(self, publish: Callable[[str, float], None] | None = None) -> None:
        self._publish = publish or (lambda _service, _skew: None)
        self._lock = threading.Lock()
        self._last: dict[str, float] = {}

    def observe(self, service: str, date: object, sent: float, received: float) -> None:
        """Record one response: `date` is its Date header, `sent`/`received` our times."""
        server = _parse(date)
        if server is None:
            return
        skew = server - (sent + received) / 2
        with self._lock:
            previous = self._last.get(service)
            self._last[service] = skew
        self._publish(service, skew)
        if abs(skew) > WARN_ABOVE and (previous is None or abs(previous) <= WARN_ABOVE):
            log.warning("clock skew against %s is %+.0fs (its Date header vs this host): "
                        "fix NTP; JWT-SVIDs may be refused as not yet valid or expired",
                        service, skew)

    def get(self, service: str) -> float | None:
        with self._lock:
            return self._last.get(service)


def _parse(date: object) -> float | None:
    if not isinstance(date, str) or not date:
        return None
    try:
        parsed = parsedate_to_datetime(date)
        if parsed.tzinfo is None:  # "-0000": UTC by RFC 5322, naive to Python
            parsed = parsed.replace(tzinfo=UTC)
        return parsed.timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
