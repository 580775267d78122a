"""IAM's StringLike globs, which both clouds' trust rules use. DEVELOPMENT ONLY.

AWS trust policies (`sub`, trusted principals) and the Google emulator's attribute
conditions and member bindings match with the same rule, so it lives here once.
"""

from __future__ import annotations

import re


def string_like(pattern: str) -> re.Pattern[str]:
    """IAM StringLike: `*` any run of characters, `?` one character, the rest literal."""
    parts = (".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.compile("".join(parts), re.DOTALL)
