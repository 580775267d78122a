"""Session fixtures: each chart rendering and the schema validation run once."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.deploy import (
    RENDERINGS,
    Doc,
    raw_manifests,
    render_chart,
    validate_documents,
)

# Documents that must be refused: they prove the validator is strict and really runs.
BROKEN: dict[str, Doc] = {
    "unknown-field": {
        "apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "x"},
        "automountServiceAccountTokn": False},
    "wrong-type": {
        "apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "x"},
        "spec": {"selector": {"matchLabels": {"a": "b"}}, "template": {
            "metadata": {"labels": {"a": "b"}},
            "spec": {"containers": [{"name": "c", "image": "i",
                                     "ports": [{"containerPort": "9464"}]}]}}}},
    "unknown-kind": {"apiVersion": "example.org/v1", "kind": "Gadget",
                     "metadata": {"name": "x"}},
    "servicemonitor-typo": {
        "apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor",
        "metadata": {"name": "x"},
        "spec": {"selector": {}, "endpoints": [{"port": "http", "intervall": "30s"}]}},
    "clusterspiffeid-no-template": {
        "apiVersion": "spire.spiffe.io/v1alpha1", "kind": "ClusterSPIFFEID",
        "metadata": {"name": "x"}, "spec": {"podSelector": {}}},
    "prometheusrule-bad-for": {
        "apiVersion": "monitoring.coreos.com/v1", "kind": "PrometheusRule",
        "metadata": {"name": "x"},
        "spec": {"groups": [{"name": "g", "rules": [
            {"alert": "A", "expr": "up == 0", "for": "five minutes"}]}]}},
}


@pytest.fixture(scope="session")
def rendered() -> dict[str, list[Doc]]:
    """Chart rendering name -> documents (`helm template`)."""
    return {name: render_chart(*files) for name, files in RENDERINGS.items()}


@pytest.fixture(scope="session")
def manifests() -> dict[str, list[Doc]]:
    """deploy/kubernetes file name -> documents."""
    return raw_manifests()


@pytest.fixture(scope="session")
def validation() -> dict[str, list[dict[str, Any]]]:
    """Source -> validation results, for the shipped and broken documents and, when helm
    is there, the rendered ones (so a missing helm never hides the other results)."""
    documents = [(f"kubernetes/{name}", d)
                 for name, docs in raw_manifests().items() for d in docs]
    documents += [(f"broken:{name}", d) for name, d in BROKEN.items()]
    by_source: dict[str, list[dict[str, Any]]] = {}
    for result in validate_documents(documents):
        by_source.setdefault(result["source"], []).append(result)
    return by_source


@pytest.fixture(scope="session")
def chart_validation(rendered: dict[str, list[Doc]]) -> dict[str, list[dict[str, Any]]]:
    """Rendering name -> validation results of its documents."""
    documents = [(f"chart:{name}", d) for name, docs in rendered.items() for d in docs]
    by_source: dict[str, list[dict[str, Any]]] = {}
    for result in validate_documents(documents):
        by_source.setdefault(result["source"], []).append(result)
    return by_source
