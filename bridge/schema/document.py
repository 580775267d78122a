"""The YAML document itself: parsed safely, with bounded aliases, without duplicate keys.

An alias bomb (a few lines of `&a [*b, *b, ...]`) expands to billions of nodes as soon as
anything walks or renders the value: it hung `check` and, sent by SIGHUP, grew the daemon
until MemoryError. Aliases stay allowed (yaml.safe_dump writes them for shared values),
but the document's size with every alias expanded is counted on the composed node graph,
before anything is constructed, and refused past `MAX_EXPANDED_NODES`; a recursive alias
is refused too. PyYAML lets a repeated key silently win (`allowed_callers` twice: the
second list replaces the first); here it is an error naming the key path.
"""

from __future__ import annotations

from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from bridge.errors import ConfigProblem

MAX_DOCUMENT_BYTES = 4 * 1024 * 1024  # far above 1,000 targets (~300 KiB)


MAX_EXPANDED_NODES = 200_000  # 1,000 targets with chains are ~40,000
# libyaml's parser where PyYAML was built with it (the wheels are): the same nodes and
# marks, a fifth of the pure-Python parse's CPU (0.75 s at 1,000 targets, 8 % of
# the daemon's cold fill).
_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _RefusedError(Exception):
    """The document is refused before construction (message is safe to show)."""

def load_document(text: str) -> tuple[object, list[ConfigProblem]]:
    """Parse one YAML document: (data, problems). Problems are whole-document errors
    (syntax, aliases, size) or duplicate keys (`targets[0].allowed_callers: ...`); when
    any is found the data is None. Messages never quote the document."""
    if len(text.encode("utf-8", "replace")) > MAX_DOCUMENT_BYTES:
        return None, [ConfigProblem("", f"the file is larger than "
                                        f"{MAX_DOCUMENT_BYTES // (1024 * 1024)} MiB")]
    try:
        return _parse(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "malformed YAML"
        # Hidden: the YAML error quotes the document, which may hold an external_id.
        return None, [ConfigProblem("", f"not valid YAML{where}: {problem}")]
    except RecursionError:
        return None, [ConfigProblem("", "not valid YAML: nested too deeply")]


def _parse(text: str) -> tuple[object, list[ConfigProblem]]:
    loader = _LOADER(text)  # raises ReaderError on characters YAML refuses
    try:
        node = loader.get_single_node()
        if node is None:
            return None, []
        try:
            _expanded_size(node, {}, set())
        except _RefusedError as exc:
            return None, [ConfigProblem("", str(exc))]
        # Only a mapping root is a config (anything else is refused by the reader).
        duplicates = list(_duplicates(loader, node, "", set())) if isinstance(
            node, MappingNode) else []
        if duplicates:
            return None, duplicates
        return loader.construct_document(node), []
    finally:
        loader.dispose()


def _expanded_size(node: Node, sizes: dict[int, int], open_: set[int]) -> int:
    """How many nodes the value has with every alias expanded (memoized per node, so the
    count itself is linear in the document). Raises _RefusedError past the bound."""
    key = id(node)
    if key in sizes:
        return sizes[key]
    if key in open_:
        raise _RefusedError("a YAML alias refers to a value that contains it (recursive)")
    size = 1
    if isinstance(node, SequenceNode | MappingNode):
        open_.add(key)
        children = (c for pair in node.value for c in pair) if isinstance(
            node, MappingNode) else iter(node.value)
        for child in children:
            size += _expanded_size(child, sizes, open_)
            if size > MAX_EXPANDED_NODES:
                raise _RefusedError(f"the document expands to more than {MAX_EXPANDED_NODES:,} "
                               "values (YAML aliases repeated inside aliases?)")
        open_.discard(key)
    sizes[key] = size
    return size


def _duplicates(loader: Any, node: Node, path: str, walked: set[int]) -> Any:
    """Yield a problem for every key that appears twice in one mapping, at the first path
    that reaches it (an aliased mapping is walked once). Keys compare as constructed (`1`
    is not `"1"`), as the dict they become would."""
    if id(node) in walked:
        return
    walked.add(id(node))
    if isinstance(node, MappingNode):
        seen: dict[object, int] = {}
        for key, value in node.value:
            if not isinstance(key, ScalarNode):
                continue  # a list or mapping as a key: construction refuses it (unhashable)
            name = loader.construct_object(key)
            here = f"{path}.{_shown(name)}" if path else _shown(name)
            if isinstance(name, str | int | float | bool) or name is None:
                line = key.start_mark.line + 1
                if name in seen:
                    yield ConfigProblem(here, f"duplicate key (first at line {seen[name]}, "
                                              f"again at line {line})")
                seen.setdefault(name, line)
            yield from _duplicates(loader, value, here, walked)
    elif isinstance(node, SequenceNode):
        for i, item in enumerate(node.value):
            yield from _duplicates(loader, item, f"{path}[{i}]", walked)


def _shown(name: object) -> str:
    """A key as the reader names it in a path (blank keys quoted, long ones clipped)."""
    text = str(name)
    if len(text) > 80:
        return repr(text[:77])
    return text if text.strip() else repr(text)
