"""Logging that cannot leak a credential.

Two nets: every secret the bridge handles is registered with a `Redactor` and replaced
by value wherever it appears (message, arguments, exception text); and anything shaped
like a JWT is masked even if nobody registered it. botocore, google-auth, urllib3 and
grpc log request and response bodies at DEBUG, so their loggers stay at WARNING
whatever our level is.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
from collections import OrderedDict
from typing import TextIO

_JWT = re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*")
_MASK = "[REDACTED]"
_THIRD_PARTY = ("botocore", "boto3", "urllib3", "google", "google.auth", "grpc", "spiffe",
                "s3transfer", "werkzeug", "msal", "azure", "requests")


_MIN_SECRET = 8  # shorter values are not registered (they would mask ordinary words)
_RUN = re.compile(rf"\S{{{_MIN_SECRET},}}")


_SPACE = re.compile(r"\s")  # str.isspace's characters (both use the same Unicode table)


def _has_space(value: str) -> bool:
    return _SPACE.search(value) is not None  # not a Python loop over a 1 KB session token


class Redactor:
    """A bounded set of secret strings to mask by value (newest kept).

    Secrets are indexed by their first 8 characters, so a line is masked in one pass over
    its characters instead of one substring search per secret: with 1,000 targets the
    set holds thousands of values and the per-secret search dominated every log line.
    """

    def __init__(self, capacity: int = 4096) -> None:
        self._lock = threading.Lock()
        self._secrets: OrderedDict[str, None] = OrderedDict()
        self._by_prefix: dict[str, set[str]] = {}
        self._capacity = capacity
        self._spaced = 0  # secrets held that contain whitespace

    def reserve(self, capacity: int) -> None:
        """Hold at least `capacity` secrets: every live credential must stay masked by
        value, so the daemon sizes this to its targets (4 secrets each, plus SVIDs)."""
        with self._lock:
            self._capacity = max(self._capacity, capacity)

    def add(self, *values: str) -> None:
        with self._lock:
            for v in values:
                if len(v) >= _MIN_SECRET:
                    if v not in self._secrets:
                        self._by_prefix.setdefault(v[:_MIN_SECRET], set()).add(v)
                        self._spaced += _has_space(v)
                    self._secrets[v] = None
                    self._secrets.move_to_end(v)
            while len(self._secrets) > self._capacity:
                old, _ = self._secrets.popitem(last=False)
                self._spaced -= _has_space(old)
                bucket = self._by_prefix[old[:_MIN_SECRET]]
                bucket.discard(old)
                if not bucket:
                    del self._by_prefix[old[:_MIN_SECRET]]

    def redact(self, text: str) -> str:
        spans: list[tuple[int, int]] = []
        with self._lock:
            index = self._by_prefix
            # A secret without whitespace starts inside a run of at least its length of
            # non-space characters: only those windows need a look (most of a line is
            # short words). One with whitespace in it makes every window count.
            runs = ((0, len(text)),) if self._spaced else (
                m.span() for m in _RUN.finditer(text))
            for first, stop in runs:
                for i in range(first, stop - _MIN_SECRET + 1):
                    bucket = index.get(text[i:i + _MIN_SECRET])
                    if bucket:
                        end = max((i + len(s) for s in bucket if text.startswith(s, i)),
                                  default=0)
                        if end:
                            spans.append((i, end))
        if spans:
            parts, pos = [], 0
            for start, end in spans:  # in order of start; overlaps merge into one mask
                if end <= pos:
                    continue
                if start >= pos:
                    parts += [text[pos:start], _MASK]
                pos = end
            text = "".join(parts) + text[pos:]
        return _JWT.sub(_MASK, text)


def bounded(text: str, limit: int = 300) -> str:
    """A remote service's description, fit for a message: whitespace collapsed, anything
    shaped like a JWT masked *before* cutting (a cut token no longer looks like one), and
    at most `limit` characters, with an ellipsis when cut."""
    text = _JWT.sub(_MASK, " ".join(text.split()))
    return text if len(text) <= limit else text[:limit - 3] + "..."


class RedactingFilter(logging.Filter):
    """Renders each record once, redacted, so no handler sees the raw arguments."""

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self._redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except (TypeError, ValueError):
            message = str(record.msg)
        record.msg, record.args = self._redactor.redact(message), None
        if record.exc_info:
            text = logging.Formatter().formatException(record.exc_info)
            record.exc_text, record.exc_info = self._redactor.redact(text), None
        if record.stack_info:
            record.stack_info = self._redactor.redact(record.stack_info)
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            text = json.dumps(fields, default=str)
            redacted = self._redactor.redact(text)
            # Parsed back only when something was masked: the formatter renders the same
            # JSON from either (the usual case, nothing secret in the fields, skips a parse).
            record.fields = json.loads(redacted) if redacted != text else fields
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, object] = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"), "level": record.levelname,
            "logger": record.name, "msg": record.getMessage()}
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            doc.update(fields)
        if record.exc_text:
            doc["exc"] = record.exc_text
        return json.dumps(doc, default=str)


def setup_logging(redactor: Redactor, *, level: str = "INFO", fmt: str = "text",
                  stream: TextIO | None = None) -> logging.Handler:
    """Install the redacting handler on the root logger, replacing one installed before."""
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "_spiffe_bridge", False)]:
        root.removeHandler(old)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler._spiffe_bridge = True  # type: ignore[attr-defined]
    handler.addFilter(RedactingFilter(redactor))
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(
        "%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(level.upper())
    pin_third_party_loggers()
    # Neither format shows where a call was made nor from which process: skip looking it
    # up (the logging HOWTO's "Optimization"; walking the stack for the caller of every
    # record was 3 % of a refresh's samples).
    logging._srcfile = None
    logging.logMultiprocessing = False
    return handler


def pin_third_party_loggers() -> None:
    """SDK loggers at WARNING, and propagating: google-auth turns propagation of the
    `google` logger off on first use unless it was configured, which would drop its
    warnings from our (redacting) handler."""
    for name in _THIRD_PARTY:
        logger = logging.getLogger(name)
        logger.setLevel(logging.WARNING)
        logger.propagate = True
