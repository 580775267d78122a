"""The fast path's own ISO-8601 reader agrees with the standard library on every date
the documents can carry, and refuses what is not exactly that format."""

from __future__ import annotations

import calendar
from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from bridge.cli.fast import epoch_of
from bridge.model import ISO_FORMAT


@given(st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(9999, 12, 31)))
def test_agrees_with_the_standard_library(moment: datetime) -> None:
    text = moment.replace(tzinfo=UTC).strftime(ISO_FORMAT)
    assert epoch_of(text) == calendar.timegm(moment.timetuple())


def test_refuses_other_shapes() -> None:
    for text in ("2026-12-03T16:00:00", "2026-12-03 16:00:00Z", "2026-13-01T00:00:00Z",
                 "2026-12-03T24:00:00Z", "\uff12\uff10\uff12\uff16-12-03T16:00:00Z",
                 "+026-12-03T16:00:00Z", None, 1796316035, "2026-12-03T16:00:00.5Z"):
        assert epoch_of(text) is None, text
