"""RoleSessionName derived from a SPIFFE ID: STS-valid, deterministic, distinct per ID."""

from __future__ import annotations

import re

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from bridge.clouds.aws.session_name import session_name

# PROTOCOLS.md §4: 2-64 characters of [\w+=,.@-]; STS means ASCII word characters, and
# fullmatch keeps a trailing newline from slipping past `$`.
STS_SESSION_NAME = re.compile(r"[\w+=,.@-]{2,64}", re.ASCII)

PREFIX = "spiffe://example.org/"
ID_2048 = PREFIX + "x" * (2048 - len(PREFIX))
ID_2048_MULTIBYTE = PREFIX + "é" * ((2048 - len(PREFIX)) // 2) + "x" * ((2048 - len(PREFIX)) % 2)

IDS = [
    "spiffe://example.org/ns/etl/sa/loader",
    "spiffe://example.org",
    "spiffe://a",
    "spiffe://example.org:8443/ns:prod/sa:api",
    "spiffe://example.org/a:b:c:d",
    "spiffe://example.org/" + "/".join(["seg"] * 40),
    ID_2048,
    ID_2048_MULTIBYTE,
    "spiffe://example.org/ünïcode/路径/🙂",
    "spiffe://:::/:::",
    "spiffe://example.org/@=,+.-_",
    "spiffe://example.org/-/-/-",
    "spiffe://example.org/.../...",
    "spiffe://example.org/a b\n\t",
    "spiffe://example.org/%2F%3A?q=1#frag",
    "spiffe://",
    "",
    "x",
]
IDS_IDS = ["k8s", "no-path", "one-char-td", "colons-port", "colons-path", "many-segments",
           "2048-bytes", "2048-bytes-multibyte", "unicode", "only-colons", "sts-punctuation",
           "dashes", "dots", "whitespace", "percent-query-fragment", "empty-after-scheme",
           "empty", "one-char"]


def test_long_ids_are_really_2048_bytes() -> None:
    """The long fixtures are at the SPIFFE maximum, in bytes."""
    assert len(ID_2048.encode()) == 2048
    assert len(ID_2048_MULTIBYTE.encode()) == 2048


@pytest.mark.parametrize("spiffe_id", IDS, ids=IDS_IDS)
def test_derived_name_is_a_valid_sts_role_session_name(spiffe_id: str) -> None:
    """Whatever the SPIFFE ID, the name is 2-64 ASCII characters of [\\w+=,.@-]."""
    name = session_name(spiffe_id)
    assert STS_SESSION_NAME.fullmatch(name), repr(name)


@pytest.mark.parametrize("spiffe_id", IDS, ids=IDS_IDS)
def test_derived_name_is_deterministic(spiffe_id: str) -> None:
    """The same ID always yields the same name (CloudTrail stays correlatable)."""
    assert session_name(spiffe_id) == session_name("".join(list(spiffe_id)))


def test_all_fixture_ids_get_distinct_names() -> None:
    """Distinct IDs, including ones that sanitise to the same text, never share a name."""
    names = [session_name(i) for i in IDS]
    assert len(set(names)) == len(IDS)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("spiffe://a.example.org/" + "s" * 300, "spiffe://b.example.org/" + "s" * 300),
        ("spiffe://example.org/x/" + "long/" * 100, "spiffe://example.org/y/" + "long/" * 100),
        ("spiffe://example.org/ns/etl", "spiffe://example.org/ns:etl"),
        ("spiffe://example.org/ns/etl", "spiffe://example.org/ns.etl"),
        ("spiffe://example.org/a", "spiffe://example.org/a/"),
        ("spiffe://example.org/ünï", "spiffe://example.org/ïnü"),
    ],
    ids=["shared-300-char-suffix", "shared-long-path-tail", "slash-vs-colon", "slash-vs-dot",
         "trailing-slash", "unicode-letters"],
)
def test_different_ids_give_different_names(a: str, b: str) -> None:
    """IDs that truncate or sanitise to the same readable text still get different names."""
    assert session_name(a) != session_name(b)


def test_the_readable_part_keeps_the_most_specific_end() -> None:
    """The name keeps the ID's rightmost path segment so CloudTrail stays legible."""
    assert "loader" in session_name("spiffe://example.org/ns/etl/sa/loader")
    assert "tail-marker" in session_name(ID_2048 + "/tail-marker")


# SPIFFE-ish text: a trust domain then path segments drawn from a wide alphabet that
# includes the characters STS refuses (`/`, `:`), percent signs, spaces and Unicode.
_TD = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789.-", min_size=1, max_size=255)
_SEGMENT = st.text(
    alphabet=st.characters(codec="utf-8", exclude_characters="/"), min_size=0, max_size=80)
SPIFFE_ISH = st.builds(lambda td, segs: "spiffe://" + td + "".join("/" + s for s in segs),
                       _TD, st.lists(_SEGMENT, max_size=30))
ANY_TEXT = st.text(alphabet=st.characters(codec="utf-8"), max_size=2100)


@given(spiffe_id=SPIFFE_ISH | ANY_TEXT)
def test_any_spiffe_ish_id_gives_a_valid_stable_name(spiffe_id: str) -> None:
    """For generated IDs of any shape and length, the name is STS-valid and deterministic."""
    name = session_name(spiffe_id)
    assert STS_SESSION_NAME.fullmatch(name), repr(name)
    assert session_name(spiffe_id) == name


@given(a=SPIFFE_ISH, b=SPIFFE_ISH)
def test_distinct_generated_ids_give_distinct_names(a: str, b: str) -> None:
    """Two different generated IDs never map to the same session name."""
    assume(a != b)
    assert session_name(a) != session_name(b)
