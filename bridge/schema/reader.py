"""A strict reader over parsed YAML that records every problem with its key path.

The config loader walks the document through this reader instead of indexing dicts
directly, so that unknown keys, wrong types and bad values all come back at once, each
named by its path (`targets[1].aws.role_arn`), and no stray exception escapes as a
traceback.
"""

from __future__ import annotations

import difflib
import re
import reprlib
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from bridge.errors import ConfigProblem

T = TypeVar("T")

_DURATION = re.compile(r"(?:(\d{1,6})h)?(?:(\d{1,8})m)?(?:(\d{1,9})s)?", re.ASCII)
_SHORT_REPR = reprlib.Repr()  # Python 3.11: no keyword arguments yet
_SHORT_REPR.maxlevel, _SHORT_REPR.maxlist, _SHORT_REPR.maxdict = 2, 4, 4
_SHORT_REPR.maxstring = _SHORT_REPR.maxother = _SHORT_REPR.maxlong = 60
_MAX_SECONDS = 10**9  # ~31 years: anything larger is a typo, and floats must not overflow


def parse_duration(value: object) -> float:
    """Parse `90s`, `15m`, `1h`, `1h30m` or integer seconds; raise ValueError otherwise."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 90s, 15m, 1h or integer seconds")  # noqa: TRY004
    if isinstance(value, int):
        if abs(value) > _MAX_SECONDS:
            raise ValueError(f"duration {_show(value)} is too large")
        return float(value)
    if isinstance(value, str):
        m = _DURATION.fullmatch(value.strip())
        if m and any(m.groups()):
            h, mi, s = (int(g) if g else 0 for g in m.groups())
            return float(h * 3600 + mi * 60 + s)
    raise ValueError(
        f"expected a duration such as 90s, 15m, 1h or integer seconds, got {_show(value)}"
    )


def _show(value: object) -> str:
    """A short, safe rendering of a user value for an error message."""
    text = _SHORT_REPR.repr(value)  # bounded: repr() of a huge nested value never ends
    return text if len(text) <= 60 else text[:57] + "..."


class Problems:
    """Collects problems across the whole document."""

    def __init__(self) -> None:
        self.items: list[ConfigProblem] = []

    def add(self, path: str, message: str) -> None:
        self.items.append(ConfigProblem(path, message))


class Section:
    """One mapping in the document; reads its keys and reports the ones never read."""

    def __init__(self, data: object, path: str, problems: Problems) -> None:
        self.path = path
        self.problems = problems
        self.valid = isinstance(data, dict)
        self._data: dict[str, Any] = data if isinstance(data, dict) else {}
        self._seen: set[str] = set()
        if data is not None and not self.valid:
            problems.add(path, f"expected a mapping, got {type(data).__name__}")

    def key(self, name: str) -> str:
        # An empty key must still be named; a long one is shown clipped.
        shown = repr(name[:77]) if len(name) > 80 else name if name.strip() else repr(name)
        return f"{self.path}.{shown}" if self.path else shown

    def has(self, name: str) -> bool:
        return name in self._data and self._data[name] is not None

    def raw(self, name: str) -> object:
        self._seen.add(name)
        return self._data.get(name)

    def error(self, name: str, message: str) -> None:
        self.problems.add(self.key(name), message)

    def get(
        self,
        name: str,
        kind: type[T],
        default: T,
        *,
        required: bool = False,
        check: Callable[[T], str | None] | None = None,
    ) -> T:
        """Read `name` as `kind`; on any problem record it and return `default`."""
        value = self.raw(name)
        if value is None:
            if required:
                self.error(name, "is required")
            return default
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
            self.error(name, f"expected {_kind_name(kind)}, got {type(value).__name__}")
            return default
        if check is not None:
            message = check(value)
            if message:
                self.error(name, message)
                return default
        return value

    def duration(
        self, name: str, default: float, *, minimum: float = 1.0, maximum: float | None = None
    ) -> float:
        """Read a duration and enforce its bounds (in seconds)."""
        value = self.raw(name)
        if value is None:
            return default
        try:
            seconds = parse_duration(value)
        except ValueError as exc:
            self.error(name, str(exc))
            return default
        if seconds < minimum:
            self.error(name, f"must be at least {_human(minimum)}, got {_written(value)}")
            return default
        if maximum is not None and seconds > maximum:
            self.error(name, f"must be at most {_human(maximum)}, got {_written(value)}")
            return default
        return seconds

    def section(self, name: str) -> Section:
        return Section(self.raw(name), self.key(name), self.problems)

    def items(self, name: str) -> Iterator[Section]:
        """Yield each element of a list of mappings as a Section (`name[i]`)."""
        value = self.raw(name)
        if value is None:
            return
        if not isinstance(value, list):
            self.error(name, f"expected a list, got {type(value).__name__}")
            return
        for i, element in enumerate(value):
            path = f"{self.key(name)}[{i}]"
            if not isinstance(element, dict):
                self.problems.add(path, f"expected a mapping, got {type(element).__name__}")
                continue
            yield Section(element, path, self.problems)

    def strings(self, name: str) -> list[str]:
        value = self.raw(name)
        if value is None:
            return []
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            self.error(name, "expected a list of strings")
            return []
        return list(value)

    def finish(self) -> None:
        """Report every key that was present but never read, with the known key it is
        closest to (`output` -> `outputs`, `rolearn` -> `role_arn`)."""
        for name in self._data:
            if name not in self._seen:
                near = _near_miss(str(name), self._seen)
                self.problems.add(self.key(str(name)), "unknown key" + (
                    f" (did you mean `{near}`?)" if near else ""))


def _near_miss(name: str, known: set[str]) -> str | None:
    """The known key `name` most likely misspells: the same but for case, `_` and `-`,
    else the closest by difflib's ratio (at least 0.75)."""
    def bare(key: str) -> str:
        return key.lower().replace("_", "").replace("-", "")

    same = sorted(k for k in known if bare(k) == bare(name))
    if same:
        return same[0]
    close = difflib.get_close_matches(name.lower(), sorted(known), n=1, cutoff=0.75)
    return close[0] if close else None


def _written(value: object) -> str:
    """A duration as the user wrote it (`300s` stays `300s`, not `5m`)."""
    text = value.strip() if isinstance(value, str) else str(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _kind_name(kind: type) -> str:
    return {str: "a string", bool: "true or false", int: "an integer", float: "a number"}.get(
        kind, kind.__name__
    )


def _human(seconds: float) -> str:
    s = int(seconds)
    if s % 3600 == 0:
        return f"{s // 3600}h"
    if s % 60 == 0:
        return f"{s // 60}m"
    return f"{s}s"
