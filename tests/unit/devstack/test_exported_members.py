"""The dev stack's faces: `__all__` names every public name they import, in isort order."""

from __future__ import annotations

import importlib
import inspect
from types import ModuleType

import pytest

FACES = ["bridge.devstack", "bridge.devstack.aws", "bridge.devstack.gcp"]


def _isort_key(name: str) -> tuple[int, str]:
    """Constants, then classes, then functions (ruff's RUF022 order)."""
    kind = 0 if name.isupper() else 1 if name[:1].isupper() else 2
    return kind, name


@pytest.mark.parametrize("face", FACES)
def test_all_is_complete_and_sorted(face: str) -> None:
    """Every public, non-module name of the face is in `__all__`, which is sorted."""
    module = importlib.import_module(face)
    public = {
        name for name, value in vars(module).items()
        if not name.startswith("_") and not isinstance(value, ModuleType)
        and name != "annotations"
    }
    assert set(module.__all__) == public
    assert list(module.__all__) == sorted(module.__all__, key=_isort_key)


@pytest.mark.parametrize("face", FACES)
def test_every_exported_name_is_documented(face: str) -> None:
    """Exported classes and functions carry a docstring saying why they exist."""
    module = importlib.import_module(face)
    for name in module.__all__:
        value = getattr(module, name)
        if inspect.isclass(value) or inspect.isfunction(value):
            assert inspect.getdoc(value), name
