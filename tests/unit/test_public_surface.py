"""Every package face says what it exports: `__all__` is sorted, complete and exact."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import types
from pathlib import Path

import pytest

import bridge

ROOT = Path(bridge.__file__).parent


def _packages() -> list[str]:
    names = ["bridge"]
    for info in pkgutil.walk_packages([str(ROOT)], prefix="bridge."):
        if info.ispkg and not info.name.startswith("bridge._proto"):
            names.append(info.name)
    return sorted(names)


PACKAGES = _packages()


def _isort_style(name: str) -> tuple[int, str]:
    """ruff's RUF022 order: SCREAMING_CASE, then CamelCase, then the rest."""
    kind = 0 if name.isupper() else 1 if name[:1].isupper() else 2
    return kind, name


def test_every_package_is_found() -> None:
    """The walk sees the layout's packages (a broken walk would pass everything)."""
    assert {"bridge.clouds.aws", "bridge.clouds.gcp", "bridge.config", "bridge.serving.grpc",
            "bridge.app", "bridge.cli", "bridge.devstack"} <= set(PACKAGES)


@pytest.mark.parametrize("name", PACKAGES)
def test_all_is_sorted_unique_and_resolvable(name: str) -> None:
    module = importlib.import_module(name)
    exported = getattr(module, "__all__", None)
    assert isinstance(exported, list), f"{name} has no __all__ list"
    assert exported == sorted(set(exported), key=_isort_style), (
        f"{name}.__all__ is not sorted (constants, classes, the rest) and unique")
    missing = [n for n in exported if not hasattr(module, n)]
    assert not missing, f"{name}.__all__ names what it does not have: {missing}"


@pytest.mark.parametrize("name", PACKAGES)
def test_all_lists_every_public_name_of_the_face(name: str) -> None:
    """Every public name the face binds that belongs to its package (defined in it or a
    submodule, or a SCREAMING_CASE constant) is in __all__, and nothing else is; what it
    imports only to use (another package's types, the standard library) is not."""
    module = importlib.import_module(name)
    public = {n for n, v in vars(module).items()
              if not n.startswith("_") and _belongs(n, v, name)}
    exported = {n for n in module.__all__ if not n.startswith("__")}
    unexported = sorted(public - exported)
    assert public == exported, f"{name}: not in __all__: {unexported}"


def _belongs(binding: str, value: object, package: str) -> bool:
    if isinstance(value, types.ModuleType):
        return False
    if binding.isupper() or isinstance(value, types.UnionType | types.GenericAlias):
        return True  # a constant or a type alias the face holds
    owner = getattr(value, "__module__", None) or type(value).__module__
    return str(owner) == package or str(owner).startswith(package + ".")


@pytest.mark.parametrize("name", PACKAGES)
def test_every_exported_class_and_function_says_why(name: str) -> None:
    """Exported classes and functions carry a docstring."""
    module = importlib.import_module(name)
    for exported in module.__all__:
        value = getattr(module, exported)
        if inspect.isclass(value) or inspect.isfunction(value):
            assert inspect.getdoc(value), f"{name}.{exported} has no docstring"
