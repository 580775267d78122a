"""The strict reader under the config loader: durations, types and never-read keys."""

from __future__ import annotations

import pytest

from bridge.schema.reader import Problems, Section, parse_duration


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("90s", 90.0),
        ("15m", 15 * 60.0),
        ("1h", 3600.0),
        ("1h30m", 3600.0 + 30 * 60),
        ("1m30s", 90.0),
        ("2h0m5s", 2 * 3600.0 + 5),
        ("1h5s", 3600.0 + 5),
        ("0s", 0.0),
        ("120m", 120 * 60.0),
        (45, 45.0),
        (0, 0.0),
        (43200, 43200.0),
    ],
    ids=["90s", "15m", "1h", "1h30m", "1m30s", "2h0m5s", "1h5s", "0s", "120m", "int-45",
         "int-0", "int-12h"],
)
def test_parse_duration_accepts_units_and_integer_seconds(value: object, seconds: float) -> None:
    """Hours, minutes and seconds combine in h-m-s order; bare integers are seconds."""
    got = parse_duration(value)
    assert got == seconds
    assert isinstance(got, float)


@pytest.mark.parametrize(
    "value",
    [
        "", "10x", "1d", "1w", "90", "1.5h", "1e3s", "h", "s", "-5s", "+5s", "1h 30m", "30m1h",
        "1H", "90 s", "5sec", "\u0669\u0660s", 1.5, True, False, None, [], {}, ["90s"], 10**400,
        "9" * 400 + "s",
    ],
    ids=["empty", "10x", "days", "weeks", "unitless-string", "fractional", "exponent",
         "unit-only-h", "unit-only-s", "negative-string", "plus-sign", "inner-space",
         "wrong-order", "uppercase-unit", "space-before-unit", "long-unit", "unicode-digits",
         "float", "true", "false", "none", "list", "dict", "list-of-duration", "huge-int",
         "huge-string"],
)
def test_parse_duration_rejects_everything_else_with_value_error(value: object) -> None:
    """Anything but `<n>h<n>m<n>s` or an integer raises ValueError naming the expected form."""
    with pytest.raises(ValueError, match="duration"):
        parse_duration(value)


def test_section_reports_unread_keys_with_their_path() -> None:
    """`finish` names every key that was present but never read, under the section's path."""
    problems = Problems()
    s = Section({"known": 1, "extra": 2}, "targets[3].aws", problems)
    assert s.get("known", int, 0) == 1
    s.finish()
    assert [(p.path, p.message) for p in problems.items] == [("targets[3].aws.extra",
                                                               "unknown key")]


@pytest.mark.parametrize(("written", "suggested"), [
    ("rolearn", "role_arn"), ("Role-ARN", "role_arn"), ("output", "outputs"),
    ("durations", "duration"), ("bogus", None)],
    ids=["no-underscore", "case-and-dash", "singular", "plural", "far-from-all"])
def test_an_unknown_key_names_the_known_key_it_misspells(written: str,
                                                        suggested: str | None) -> None:
    """A near miss of a key the section reads (present or not) gets "did you mean"."""
    problems = Problems()
    s = Section({written: 1}, "t", problems)
    for known in ("role_arn", "outputs", "duration", "region"):
        s.raw(known)
    s.finish()
    hint = f" (did you mean `{suggested}`?)" if suggested else ""
    assert [p.message for p in problems.items] == [f"unknown key{hint}"]


@pytest.mark.parametrize(
    ("value", "kind"),
    [(True, int), ("32", int), (1, bool), ("true", bool), (1.5, int), (7, str), (False, float)],
    ids=["bool-for-int", "string-for-int", "int-for-bool", "string-for-bool", "float-for-int",
         "int-for-string", "bool-for-float"],
)
def test_section_get_rejects_wrong_types_and_returns_the_default(value: object,
                                                                 kind: type) -> None:
    """A wrong type (booleans are not numbers) is recorded at its path; the default is used."""
    problems = Problems()
    sentinel = object()
    got = Section({"k": value}, "root", problems).get("k", kind, sentinel)
    assert got is sentinel
    assert [p.path for p in problems.items] == ["root.k"]
    assert problems.items[0].message.startswith("expected ")


def test_section_get_widens_int_to_float() -> None:
    """An integer is a valid number where a float is expected."""
    problems = Problems()
    assert Section({"k": 3}, "", problems).get("k", float, 0.0) == 3.0
    assert problems.items == []


def test_items_yields_mappings_and_reports_other_elements() -> None:
    """List elements that are not mappings are reported at `name[i]` and skipped."""
    problems = Problems()
    root = Section({"targets": [{"name": "a"}, "b", {"name": "c"}]}, "", problems)
    paths = [s.path for s in root.items("targets")]
    assert paths == ["targets[0]", "targets[2]"]
    assert [p.path for p in problems.items] == ["targets[1]"]
