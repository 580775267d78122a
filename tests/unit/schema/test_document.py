"""load_document: aliases bounded by expanded size, duplicate keys named by path."""

from __future__ import annotations

import time

import pytest

from bridge.schema.document import MAX_EXPANDED_NODES, load_document


def _bomb(levels: int) -> str:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


def test_an_alias_bomb_is_refused_without_expanding_it() -> None:
    started = time.process_time()
    data, problems = load_document(_bomb(9))  # 10**9 values expanded
    assert data is None
    assert [p.path for p in problems] == [""]
    assert "expands to more than" in problems[0].message
    assert time.process_time() - started < 5  # counted on the node graph, linearly


def test_modest_aliases_such_as_safe_dump_writes_are_fine() -> None:
    data, problems = load_document("base: &b {region: us-east-1}\ncopy: *b\n")
    assert problems == []
    assert data == {"base": {"region": "us-east-1"}, "copy": {"region": "us-east-1"}}


def test_the_bound_is_on_expanded_values() -> None:
    assert MAX_EXPANDED_NODES >= 100_000  # 1,000 targets with chains fit
    _, problems = load_document(_bomb(5))  # 10**5 leaves, 111,111 values
    assert problems == []


def test_a_recursive_alias_is_refused() -> None:
    _, problems = load_document("a: &a [*a]\n")
    assert "recursive" in problems[0].message


@pytest.mark.parametrize(("text", "path"), [
    ("a: 1\na: 2\n", "a"),
    ("targets:\n- name: x\n  allowed_callers: [p]\n  allowed_callers: [q]\n",
     "targets[0].allowed_callers"),
    ("grpc: {socket: a, socket: b}\n", "grpc.socket"),
], ids=["top-level", "in-a-list", "flow-mapping"])
def test_a_duplicate_key_is_named_by_its_path(text: str, path: str) -> None:
    data, problems = load_document(text)
    assert data is None
    assert [p.path for p in problems] == [path]
    assert "duplicate key" in problems[0].message
