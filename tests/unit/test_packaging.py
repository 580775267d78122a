"""Installing the package prints no deprecation box: `project.license` is an SPDX
expression (PEP 639), not the deprecated table, and the installed metadata says so."""

from __future__ import annotations

import importlib.metadata
import tomllib
from pathlib import Path

import pytest

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


def test_license_is_an_spdx_expression() -> None:
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    assert project["license"] == "Apache-2.0"
    requires = tomllib.loads(PYPROJECT.read_text())["build-system"]["requires"]
    assert any(r.startswith("setuptools>=") and int(r.split(">=")[1].split(".")[0]) >= 77
               for r in requires), requires  # the first setuptools that reads it


def test_installed_metadata_carries_the_license_expression() -> None:
    try:
        metadata = importlib.metadata.metadata("spiffe-bridge")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("spiffe-bridge is not installed (run `make install`)")
    assert metadata["License-Expression"] == "Apache-2.0"
