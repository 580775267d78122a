"""Every manifest, shipped or rendered, validates offline: core kinds strictly against the
Kubernetes schemas (oldest and newest supported version), custom resources against their
CRDs' openAPIV3Schema (prometheus-operator, spire-controller-manager)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.deploy.conftest import BROKEN
from tests.support.deploy import KUBERNETES, RENDERINGS

RAW = [f"kubernetes/{p.name}" for p in sorted(KUBERNETES.glob("*.yaml"))]
CHART = [f"chart:{name}" for name in RENDERINGS]
CUSTOM_KINDS = {"ServiceMonitor", "PrometheusRule", "ClusterSPIFFEID"}
Results = dict[str, list[dict[str, Any]]]


def _assert_valid(source: str, results: list[dict[str, Any]]) -> None:
    assert results, f"{source} has no documents"
    problems = [f"{r['kind']}/{r['name']}: {e}" for r in results for e in r["errors"]]
    assert problems == []
    for r in results:
        expected = "crd" if r["kind"] in CUSTOM_KINDS else "kubernetes"
        assert r["validated_by"] == expected, r


@pytest.mark.parametrize("source", RAW)
def test_shipped_manifests_validate(source: str, validation: Results) -> None:
    """No schema error in any document of the file; custom kinds checked by their CRD."""
    _assert_valid(source, validation[source])


@pytest.mark.parametrize("source", CHART)
def test_rendered_chart_validates(source: str, chart_validation: Results) -> None:
    _assert_valid(source, chart_validation[source])


def test_every_custom_kind_is_validated(validation: Results, chart_validation: Results) -> None:
    """The raw examples and the chart (all-on) each exercise every CRD's schema they use."""
    raw = {r["kind"] for s in RAW for r in validation[s] if r["validated_by"] == "crd"}
    chart = {r["kind"] for r in chart_validation["chart:all-on"] if r["validated_by"] == "crd"}
    assert raw == {"ServiceMonitor", "ClusterSPIFFEID"}
    assert chart == CUSTOM_KINDS


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_broken_documents_are_refused(name: str, validation: Results) -> None:
    """Typos, wrong types, unknown kinds and CRD violations are caught: the check is real."""
    (result,) = validation[f"broken:{name}"]
    assert result["errors"], result
