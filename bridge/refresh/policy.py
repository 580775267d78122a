"""The refresh policy: pure functions of times and a jitter draw, so they can be proven.

- Refresh anywhere in the credential's *safe window* (`spread_refresh`): from a quarter of
  its life to the last moment that still leaves the larger of `min_remaining` + `LEAD`
  (the SDKs' window) and `RESERVE` of its life (so an outage of a third of the lifetime
  or a key its token services do not know yet lapses nothing), at the point a draw in
  [0, 1) picks. The draws are deterministic per node and target
  (`refresh.spread`), so a fleet started together, or lined up by an outage that ended,
  spreads over the whole window instead of refreshing together for ever. A credential
  too short for the window is refreshed in [25 %, 50 %] of its life. A credential a
  previous run left is replaced within what remains of its safe window
  (`resume_refresh`), not all at start.
- A numbered bridge (`refresh.node_index`) refreshes at a fixed wall-clock phase of a
  period instead (`locked_refresh`), the period being the safe window's middle, so a
  fleet whose phases are evenly spaced calls at an even rate (`spread.Spread.phase`).
- `next_refresh` is the earlier policy (half life ±10 %, which a short credential's
  window clamps to no spread at all), kept for the fleet simulation's side-by-side
  and for embedders that pass no spread. Its rule: refresh at about half the
  credential's lifetime (±10 % jitter), but early enough that
  what we hand out always has `min_remaining` left (SDKs re-fetch inside that window,
  which each cloud gives: botocore 15 min, google-auth 3 min 45 s), and never earlier
  than a quarter of the lifetime, so a credential shorter than the window cannot make us hammer STS.
- Retry failures after 1 s doubling to 5 min, at 75-100 % of that step (Vault's shape),
  reset on success; a permanent failure goes straight to the cap. While a good credential
  is still in hand, never wait past the moment it must be replaced.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

JWT_MIN_REMAINING = 30.0  # the JWT file: readers exchange it themselves, fast
BACKOFF_BASE = 1.0
BACKOFF_CAP = 300.0
MIN_DELAY = 1.0
MIN_LIFETIME = 2.0  # seconds: less on arrival is too little to hand out
LEAD = 60.0  # refresh this long before the hand-out window opens, to absorb one slow call
RESERVE = 0.4  # of the lifetime, still left at the latest spread refresh (outages, retries)
TRANSIENT_CAP = 30.0  # retry cap for transient failures when budgets bound the call rate
LOCK_GRID = 60.0  # lifetimes are rounded to this for the phase lock's period (same on every node)
LOCK_MARGIN = 30.0  # a window narrower than twice this is not locked (latency, rounding)


@dataclass(frozen=True, slots=True)
class Policy:
    min_remaining: float
    backoff_base: float = BACKOFF_BASE
    backoff_cap: float = BACKOFF_CAP
    transient_cap: float | None = None  # a lower cap for retryable failures (budgets on)

    def next_refresh(self, *, issued_at: float, expires_at: float, now: float,
                     jitter: float) -> float:
        """Seconds from `now` until the next refresh; `jitter` is a draw in [-1, 1]."""
        lifetime = max(0.0, expires_at - issued_at)
        half = issued_at + lifetime * 0.5 * (1.0 + 0.1 * _clamp(jitter, -1.0, 1.0))
        latest = expires_at - self.min_remaining - LEAD
        floor = issued_at + lifetime * 0.25
        at = min(half, max(latest, floor))
        return max(MIN_DELAY, at - now)

    def safe_window(self, *, issued_at: float, expires_at: float) -> tuple[float, float]:
        """(earliest, latest) refresh instants of a credential: a quarter of its life, and
        the last moment that still leaves `min_remaining` with `LEAD` to spare and
        `RESERVE` of its life (half its life when it is too short for the window)."""
        lifetime = max(0.0, expires_at - issued_at)
        earliest = issued_at + lifetime * 0.25
        latest = expires_at - max(self.min_remaining + LEAD, lifetime * RESERVE)
        if latest <= earliest:
            latest = issued_at + lifetime * 0.5
        return earliest, latest

    def spread_refresh(self, *, issued_at: float, expires_at: float, now: float,
                       draw: float) -> float:
        """Seconds from `now` until the next refresh, at the point of the safe window
        that `draw` (in [0, 1]) picks: 0 its start, 1 its end."""
        earliest, latest = self.safe_window(issued_at=issued_at, expires_at=expires_at)
        at = earliest + (latest - earliest) * _clamp(draw, 0.0, 1.0)
        return max(MIN_DELAY, _finite(at - now))

    def lock_period(self, lifetime: float) -> float | None:
        """The phase lock's period for a credential of `lifetime`: the middle of its
        safe window (the spread's average, so the lock costs no extra calls, and what is
        left at each refresh is the spread's average too), in whole seconds, from the
        lifetime rounded to `LOCK_GRID` (every node holding the same kind of credential
        has the same period). None when too short for a window of `2 * LOCK_MARGIN`."""
        nominal = round(lifetime / LOCK_GRID) * LOCK_GRID
        if nominal < 2 * LOCK_GRID:
            return None
        earliest, latest = self.safe_window(issued_at=0.0, expires_at=nominal)
        if latest - earliest < 2 * LOCK_MARGIN:
            return None
        return float(math.floor((earliest + latest) / 2))

    def locked_refresh(self, *, issued_at: float, expires_at: float, now: float,
                       phase: float, wall_offset: float = 0.0) -> float:
        """Seconds from `now` until the next refresh of a phase-locked bridge: the last
        wall-clock instant at or before the safe window's end whose position in the lock
        period is `phase` (in [0, 1)). Every refresh lands on the node's phase, so a
        fleet whose nodes hold evenly spaced phases calls at an even rate; from one on
        the phase, the next is one period (the window's middle) later. The first after
        a start may come before the window opens: once. A credential
        whose phase is already past (shorter than its lifetime rounds to) is refreshed
        at its spread point instead. `wall_offset` is wall-clock time minus the times
        passed in."""
        period = self.lock_period(expires_at - issued_at)
        if period is None:
            return self.spread_refresh(issued_at=issued_at, expires_at=expires_at, now=now,
                                       draw=phase)
        _, latest = self.safe_window(issued_at=issued_at, expires_at=expires_at)
        wall = latest + wall_offset
        at = (math.floor(wall / period - phase) + phase) * period - wall_offset
        if not at - now >= MIN_DELAY:  # a credential shorter than its kind's (kept links)
            return self.spread_refresh(issued_at=issued_at, expires_at=expires_at, now=now,
                                       draw=phase)
        return at - now

    def resume_refresh(self, *, expires_at: float, now: float, draw: float) -> float:
        """Seconds from `now` until a credential recovered from a previous run (issued at
        an unknown time) is replaced: within what is left of its safe window, keeping
        `RESERVE` of what is left (its lifetime is not known)."""
        latest = expires_at - max(self.min_remaining + LEAD, (expires_at - now) * RESERVE)
        return max(MIN_DELAY, _finite((latest - now) * _clamp(draw, 0.0, 1.0)))

    def retry_delay(self, *, failures: int, permanent: bool, jitter: float,
                    now: float, replace_by: float | None) -> float:
        """Seconds until the next attempt after `failures` consecutive failures (>= 1).

        `jitter` is a draw in [0, 1]; `replace_by` is when the credential in hand must
        be replaced (expiry minus the hand-out window), or None when none is held.
        """
        steps = max(0, failures - 1)
        cap = self.backoff_cap if permanent or self.transient_cap is None else min(
            self.backoff_cap, self.transient_cap)
        step = cap if permanent else min(cap, self.backoff_base * (2.0 ** min(steps, 32)))
        delay = step * (0.75 + 0.25 * _clamp(jitter, 0.0, 1.0))
        if replace_by is not None and replace_by > now:
            delay = min(delay, replace_by - now)
        return max(min(MIN_DELAY, step), delay)

    @property
    def min_lifetime(self) -> float:
        """A credential arriving with less than this left is a failure with its own
        backoff, not a success to refresh again at once (a storm). Lifetimes are measured
        by the issuer's own clock (`Expiration` minus `Date`), so only an issuer handing
        out (nearly) expired credentials, or an answer without a `Date` on a host whose
        clock is ahead, gets here."""
        return MIN_LIFETIME

    @property
    def least_useful_life(self) -> float:
        """The least validity worth deriving a credential from when none is held (older
        kept chain material): one whose spread window still opens, at a quarter of its
        life, before the hand-out window plus `LEAD` (AWS: 1280 s, GCP: 380 s). Less
        would be handed out briefly and replaced at once."""
        return (self.min_remaining + LEAD) / 0.75

    def hand_out_ok(self, *, expires_at: float, now: float) -> bool:
        """True while a credential still has the SDKs' refresh window left."""
        return expires_at - now >= self.min_remaining


def _finite(v: float) -> float:
    return v if math.isfinite(v) else 0.0


def _clamp(v: float, lo: float, hi: float) -> float:
    return lo if v < lo else hi if v > hi else v
