"""Every line the command line prints about the bridge's state: redacted and bounded.

A remote service may echo a request (a token) in its error text, and an error may carry
kilobytes of it; the `once` summary, the status table and the error lines all print
such text. Each line goes through the process's redactor (every secret the bridge
learned, and anything shaped like a JWT), control characters are shown escaped, and a
line is cut at `LINE_LIMIT` characters. Credentials printed on purpose (the
`credential-process` JSON) do not go through here.
"""

from __future__ import annotations

import sys

from bridge.logs import Redactor

LINE_LIMIT = 1000

# One redactor for the process: everything the daemon learns is masked in every line.
REDACTOR = Redactor()


def say(text: str, *, err: bool = False) -> None:
    """Print `text` (one line or a few) to stdout, or stderr with `err`, made safe."""
    lines = [safe_line(line) for line in text.split("\n")]
    print("\n".join(lines), file=sys.stderr if err else sys.stdout)


def safe_line(line: str) -> str:
    """One line, redacted, control characters escaped, at most LINE_LIMIT characters."""
    text = REDACTOR.redact(line)
    if any((ord(c) < 0x20 and c != "\t") or c == "\x7f" for c in text):
        text = "".join(c if (ord(c) >= 0x20 and c != "\x7f") or c == "\t"
                       else repr(c)[1:-1] for c in text)
    return text if len(text) <= LINE_LIMIT else text[:LINE_LIMIT - 3] + "..."
