"""AWS-shaped identifiers the emulator hands out. DEVELOPMENT ONLY.

SDKs and the bridge's own checks look at prefixes and lengths (`ASIA` temporary keys,
`AROA` role IDs, 40-character secrets), so the fakes keep AWS's shapes; the values
come from `secrets`, since tests treat them as real secrets that must never be logged.
"""

from __future__ import annotations

import base64
import secrets
import string

_UPPER_ALNUM = string.ascii_uppercase + string.digits
_SECRET_ALPHABET = string.ascii_letters + string.digits + "+/"


def _random(alphabet: str, length: int) -> str:
    return "".join(secrets.choice(alphabet) for _ in range(length))


def new_role_id() -> str:
    """A role's unique ID, `AROA` and 17 characters."""
    return "AROA" + _random(_UPPER_ALNUM, 17)


def new_access_key_id() -> str:
    """A temporary access key ID, `ASIA` and 16 characters."""
    return "ASIA" + _random(_UPPER_ALNUM, 16)


def new_secret_access_key() -> str:
    """A 40-character secret access key."""
    return _random(_SECRET_ALPHABET, 40)


def new_session_token() -> str:
    """An opaque session token (base64 of 300 random bytes)."""
    return base64.b64encode(secrets.token_bytes(300)).decode()
