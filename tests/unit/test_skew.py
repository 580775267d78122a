"""ClockSkew: server time from the Date header minus ours at the request's midpoint."""

from __future__ import annotations

import logging
from email.utils import formatdate

import pytest

from bridge.skew import ClockSkew


def test_skew_is_measured_against_the_midpoint() -> None:
    published: list[tuple[str, float]] = []
    skew = ClockSkew(lambda service, seconds: published.append((service, seconds)))
    sent = 1_800_000_000.0
    skew.observe("aws_sts", formatdate(sent + 301, usegmt=True), sent, sent + 2)
    assert published == [("aws_sts", 300.0)]
    assert skew.get("aws_sts") == 300.0
    assert skew.get("gcp") is None


@pytest.mark.parametrize("date", [None, "", "yesterday", 12345, "Mon, 99 Foo 2026 99:99:99 GMT"])
def test_missing_or_malformed_dates_are_ignored(date: object) -> None:
    published: list[float] = []
    skew = ClockSkew(lambda _s, seconds: published.append(seconds))
    skew.observe("gcp", date, 1.0, 2.0)
    assert published == []
    assert skew.get("gcp") is None


def test_minus_zero_zone_is_utc() -> None:
    skew = ClockSkew()
    sent = 1_800_000_000.0
    skew.observe("gcp", formatdate(sent, usegmt=False).rsplit(" ", 1)[0] + " -0000", sent, sent)
    assert skew.get("gcp") == 0.0


def test_warns_once_when_skew_crosses_the_leeway(caplog: pytest.LogCaptureFixture) -> None:
    skew = ClockSkew()
    now = 1_800_000_000.0
    with caplog.at_level(logging.WARNING, logger="bridge.skew"):
        for offset in (5, -120, -121, -119, 3, 90):
            skew.observe("aws_sts", formatdate(now + offset, usegmt=True), now, now)
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 2
    assert "-120s" in warnings[0]
    assert "+90s" in warnings[1]
