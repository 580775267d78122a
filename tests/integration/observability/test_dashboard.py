"""The Grafana dashboard is importable: schema, ids, layout, datasource and variables."""

from __future__ import annotations

import re
from typing import Any

from tests.support.prometheus import (
    dashboard_exprs,
    dashboard_panels,
    load_dashboard,
    metric_names,
)

DS_REF = {"type": "prometheus", "uid": "${datasource}"}


def _variables(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in doc["templating"]["list"]}


def test_dashboard_has_an_importable_header() -> None:
    """schemaVersion >= 36, a stable uid, a title, and a Prometheus datasource input."""
    doc = load_dashboard()
    assert doc["schemaVersion"] >= 36
    assert doc["uid"] == "spiffe-bridge"
    assert doc["title"]
    assert doc["id"] is None  # an exported dashboard carries no database id
    inputs = doc["__inputs"]
    assert [(i["type"], i["pluginId"]) for i in inputs] == [("datasource", "prometheus")]


def test_datasource_and_target_variables() -> None:
    """`datasource` is a prometheus datasource variable; `target` lists the bridge's targets."""
    variables = _variables(load_dashboard())
    ds = variables["datasource"]
    assert ds["type"] == "datasource"
    assert ds["query"] == "prometheus"
    target = variables["target"]
    assert target["type"] == "query"
    assert target["datasource"] == DS_REF
    query = target["query"]["query"] if isinstance(target["query"], dict) else target["query"]
    assert query == "label_values(spiffe_bridge_credential_state, target)"
    assert target["definition"] == query
    assert target["includeAll"] is True
    assert target["multi"] is True
    assert target["allValue"] == ".*"


def test_panels_have_unique_ids_and_a_grid_position() -> None:
    """Panel ids are unique ints; gridPos fits the 24-column grid and panels do not overlap."""
    panels = dashboard_panels(load_dashboard())
    ids = [p["id"] for p in panels]
    assert all(isinstance(i, int) for i in ids)
    assert len(ids) == len(set(ids))
    cells: dict[tuple[int, int], int] = {}
    for p in panels:
        g = p["gridPos"]
        assert {"h", "w", "x", "y"} <= g.keys(), p["title"]
        assert g["w"] > 0, p["title"]
        assert g["h"] > 0, p["title"]
        assert g["x"] >= 0, p["title"]
        assert g["x"] + g["w"] <= 24, p["title"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"{p['title']} overlaps panel {cells[(x, y)]}"
                cells[(x, y)] = p["id"]


def test_every_panel_and_query_uses_the_datasource_variable() -> None:
    """No hard-coded datasource: panels and their queries reference `${datasource}`."""
    for p in dashboard_panels(load_dashboard()):
        assert p["datasource"] == DS_REF, p["title"]
        assert p["targets"], p["title"]
        ref_ids = [t["refId"] for t in p["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), p["title"]
        for t in p["targets"]:
            assert t["datasource"] == DS_REF, p["title"]


def test_the_required_panels_and_queries_are_there() -> None:
    """Each panel the issue asks for exists, with the query shape it names."""
    exprs = dict(dashboard_exprs(load_dashboard()))
    joined = "\n".join(exprs.values())
    assert "spiffe_bridge_credential_expiry_timestamp_seconds{target=~\"$target\"} - time()" in (
        joined)
    assert re.search(r"histogram_quantile\(0\.5, .*spiffe_bridge_refresh_duration_seconds_bucket",
                     joined)
    assert re.search(r"histogram_quantile\(0\.99, .*spiffe_bridge_refresh_duration_seconds_bucket",
                     joined)
    used = set().union(*(metric_names(e) for e in exprs.values()))
    assert {"spiffe_bridge_credential_state", "spiffe_bridge_refresh_total",
            "spiffe_bridge_refresh_failures_total", "spiffe_bridge_workload_api_up",
            "spiffe_bridge_grpc_requests_total", "spiffe_bridge_output_write_failures_total",
            "spiffe_bridge_svid_expiry_timestamp_seconds",
            "spiffe_bridge_x509_svid_expiry_timestamp_seconds",
            "spiffe_bridge_permanent_failure"} <= used
    titles = {p["title"] for p in dashboard_panels(load_dashboard())}
    assert {"Time to expiry per target", "Credential state", "Refresh rate by result",
            "Refresh failures by stage and reason", "Refresh latency p50 / p99 by stage",
            "Workload API up", "gRPC requests and errors", "Output write failures",
            "SVID time to expiry", "X.509-SVID time to expiry",
            "Permanent failure alarm"} <= titles


def test_metric_name_extraction_sees_through_promql_syntax() -> None:
    """The helper the live tests rely on finds metric names, not functions or labels."""
    assert metric_names('sum by (target, le) (rate(a_bucket{x="y",le!~"b_c"}[5m])) '
                        '/ on (target) group_left b_total unless absent(up{job="j"})') == {
        "a_bucket", "b_total", "up"}
    assert metric_names("spiffe_bridge_x - time() < 600 > 0") == {"spiffe_bridge_x"}
