"""ClockSkew: server time from the Date header minus ours at the request's midpoint,
carried on the monotonic clock (a later wall-clock step does not change `cloud_now`)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from email.utils import formatdate

import pytest

from bridge.skew import ClockSkew


class Clocks:
    """A wall clock and a monotonic one, moved by the test."""

    def __init__(self, wall: float) -> None:
        self.wall, self.mono = wall, 1_000.0

    def skew(self, publish: Callable[[str, Callable[[], float]], None] | None = None
             ) -> ClockSkew:
        return ClockSkew(publish, wall=lambda: self.wall, monotonic=lambda: self.mono)


def test_skew_is_measured_against_the_midpoint() -> None:
    published: list[tuple[str, Callable[[], float]]] = []
    sent = 1_800_000_000.0
    clocks = Clocks(sent + 2)
    skew = clocks.skew(lambda service, live: published.append((service, live)))
    skew.observe("aws_sts", formatdate(sent + 301, usegmt=True), sent, sent + 2)
    assert [(service, live()) for service, live in published] == [("aws_sts", 300.0)]
    assert skew.get("aws_sts") == 300.0
    assert skew.get("gcp") is None


def test_the_clouds_clock_rides_the_monotonic_clock_through_wall_steps() -> None:
    sent = 1_800_000_000.0
    clocks = Clocks(sent)
    skew = clocks.skew()
    skew.observe("aws_sts", formatdate(sent, usegmt=True), sent, sent)
    clocks.wall -= 3600  # the host clock is stepped back an hour
    clocks.mono += 10
    assert skew.cloud_now() == sent + 10
    assert skew.get("aws_sts") == 3610.0  # the live skew shows the step at once


@pytest.mark.parametrize("date", [None, "", "yesterday", 12345, "Mon, 99 Foo 2026 99:99:99 GMT"])
def test_missing_or_malformed_dates_are_ignored(date: object) -> None:
    published: list[object] = []
    skew = ClockSkew(lambda _s, live: published.append(live))
    skew.observe("gcp", date, 1.0, 2.0)
    assert published == []
    assert skew.get("gcp") is None


def test_minus_zero_zone_is_utc() -> None:
    sent = 1_800_000_000.0
    skew = Clocks(sent).skew()
    skew.observe("gcp", formatdate(sent, usegmt=False).rsplit(" ", 1)[0] + " -0000", sent, sent)
    assert skew.get("gcp") == 0.0


def test_warns_once_when_skew_crosses_the_leeway(caplog: pytest.LogCaptureFixture) -> None:
    now = 1_800_000_000.0
    skew = Clocks(now).skew()
    with caplog.at_level(logging.WARNING, logger="bridge.skew"):
        for offset in (5, -120, -121, -119, 3, 90):
            skew.observe("aws_sts", formatdate(now + offset, usegmt=True), now, now)
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 2
    assert "-120s" in warnings[0]
    assert "+90s" in warnings[1]
