"""The one rule for a test that needs a tool or privilege this machine may lack: skip
locally, with how to get it, but fail under CI=true (CI installs everything)."""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def unavailable(message: str) -> NoReturn:
    """Skip with `message`, or fail with it under CI=true. Never returns."""
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)
