"""A real Prometheus scrapes the bridge on the dev stack: every dashboard query and rule
finds data, the refresh-failure alert trips on a failing STS, and no secret is a label.

The deployment (three targets, faults, Prometheus) is described in conftest.py.
"""

from __future__ import annotations

import time
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.observability.conftest import SKEWED_LIFETIME, Deployment
from tests.support.prometheus import (
    JOB,
    Prometheus,
    dashboard_exprs,
    load_dashboard,
    load_rules,
    metric_names,
    substitute,
)
from tests.support.wait import wait_for

pytestmark = pytest.mark.integration

# Metrics that legitimately have no series yet. Only their # TYPE/# HELP lines are
# scraped, so a rename still breaks the metadata check below.
NO_SERIES_YET = {
    "spiffe_bridge_grpc_requests_total": "the gRPC API is not served yet (README status)",
}
FORBIDDEN_IN_LABELS = ("eyJ", "ASIA", "arn:")
# Series only `source: x509` targets have (the deployment's `x509`): a panel of them is
# empty for a JWT target such as `demo` or `demo-azure`, and must have data for all
# targets (".*").
X509_ONLY = {"spiffe_bridge_x509_svid_expiry_timestamp_seconds",
             "spiffe_bridge_x509_svid_rotations_total"}


def _check_names(prom: Prometheus, expr: str) -> list[str]:
    """Problems with the metric names `expr` selects: unknown to the scrape, or no series."""
    names = metric_names(expr)
    problems = [] if names else [f"no metric name found in {expr!r}"]
    for name in sorted(names):
        if name in NO_SERIES_YET:
            if not prom.metadata(name):
                problems.append(f"{name}: not exported by the bridge (no # TYPE line)")
        elif not prom.has_series(name):
            problems.append(f"{name}: no series")
    return problems


def test_prometheus_scrapes_the_bridge(deployment: Deployment) -> None:
    """The `spiffe-bridge` job's target is up and its build_info is stored."""
    prom = deployment.prometheus
    up = wait_for(lambda: prom.query(f'up{{job="{JOB}"}} == 1'), "a successful scrape", timeout=15)
    assert up[0]["metric"]["instance"] == deployment.bridge_address
    assert prom.query('spiffe_bridge_build_info{version!=""}')


@pytest.mark.parametrize("target", [".*", "demo", "demo-azure"])
def test_every_dashboard_query_returns_data(deployment: Deployment, target: str) -> None:
    """Each panel query (with $target and $__rate_interval filled in) gives a non-empty result."""
    prom = deployment.prometheus
    queries = {ref: substitute(expr, target) for ref, expr in dashboard_exprs(load_dashboard())}
    assert len(queries) >= 12
    known_empty = {ref for ref, expr in queries.items()
                   if metric_names(expr) <= NO_SERIES_YET.keys()
                   or (target != ".*" and metric_names(expr) <= X509_ONLY)}

    def empty() -> dict[str, str]:
        return {ref: q for ref, q in queries.items()
                if ref not in known_empty and not prom.query(q)}

    still_empty: dict[str, str] = {}

    def all_filled() -> bool:
        still_empty.clear()
        still_empty.update(empty())
        return not still_empty

    try:
        wait_for(all_filled, "data for every panel", timeout=30, interval=1.0)
    except AssertionError:
        raise AssertionError(f"panels without data: {still_empty}") from None
    problems = [p for q in queries.values() for p in _check_names(prom, q)]
    assert problems == []
    for ref in known_empty:  # evaluates (status success), even though empty today
        prom.query(queries[ref])


def test_rules_are_loaded_and_evaluate_without_error(deployment: Deployment) -> None:
    """Prometheus loaded every rule of alerts.yaml, and each evaluates with health ok."""
    prom = deployment.prometheus
    expected = {r.get("alert") or r["record"] for r in load_rules()}

    def evaluated() -> dict[str, dict[str, object]] | None:
        groups = prom.api("rules")["groups"]
        rules = {r["name"]: r for g in groups for r in g["rules"]}
        if set(rules) != expected or any(r["health"] == "unknown" for r in rules.values()):
            return None
        return rules

    rules = wait_for(evaluated, "every rule evaluated once", timeout=15)
    assert {name: r.get("lastError", "") for name, r in rules.items()
            if r["health"] != "ok"} == {}


@pytest.mark.parametrize("rule", load_rules(), ids=lambda r: str(r.get("alert") or r["record"]))
def test_every_rule_expression_reads_live_series(deployment: Deployment,
                                                 rule: dict[str, str]) -> None:
    """Each rule's metrics have series in the scrape; the full expression evaluates."""
    prom = deployment.prometheus
    problems: list[str] = []

    def names_ok() -> bool:
        problems[:] = _check_names(prom, rule["expr"])
        return not problems

    try:
        wait_for(names_ok, f"series for {rule['expr']!r}", timeout=20, interval=1.0)
    except AssertionError:
        raise AssertionError(problems) from None
    prom.query(rule["expr"])  # the whole expression, comparison included: status success
    if "record" in rule:  # Prometheus evaluated it into series of its own
        wait_for(lambda: prom.query(rule["record"]), f"series of {rule['record']}",
                 timeout=10)


def test_refresh_failures_trip_the_alert_and_readyz(deployment: Deployment) -> None:
    """All exchanges for `down` answer 503: the alert expression holds, /readyz says why."""
    prom = deployment.prometheus
    rules = {r["alert"]: r for r in load_rules() if "alert" in r}
    expr = rules["SpiffeBridgeRefreshFailing"]["expr"]
    firing = wait_for(lambda: [s for s in prom.query(expr) if s["metric"]["target"] == "down"],
                      "the refresh-failure alert expression for `down`", timeout=30)
    assert firing[0]["metric"]["job"] == JOB
    # `demo` failed once and then succeeded: never in it. `skewed` fails from ~15-30 s
    # after its first delivery on (by design, see conftest), so it may join `down` here.
    firing_targets = {s["metric"]["target"] for s in prom.query(expr)}
    assert "down" in firing_targets
    assert firing_targets <= {"down", "skewed"}, firing_targets
    # Prometheus evaluated the rule itself: pending (its `for` is 5 minutes).
    assert wait_for(lambda: prom.query(
        'ALERTS{alertname="SpiffeBridgeRefreshFailing",target="down",alertstate="pending"}'),
        "the alert pending", timeout=5)
    assert prom.query('increase(spiffe_bridge_refresh_failures_total{target="down",'
                      'stage="aws_web_identity",reason="unavailable"}[1m]) > 0')
    # 503 is retryable: not a permanent failure.
    assert prom.query(rules["SpiffeBridgePermanentFailure"]["expr"]) == []

    status, body = deployment.readyz()
    assert status == 503
    assert body["ready"] is False
    down = body["targets"]["down"]
    assert down["ready"] is False
    assert down["state"] == "expired"
    assert down["last_error"] == "unavailable"
    assert down["consecutive_failures"] >= 2
    assert body["targets"]["demo"]["ready"] is True
    assert deployment.down_sts.faults.calls("AssumeRoleWithWebIdentity") >= 2


def test_output_write_failures_are_counted(deployment: Deployment) -> None:
    """The directory planted at aws/down.json is refused: failures counted, alert expr holds."""
    prom = deployment.prometheus
    expr = next(r["expr"] for r in load_rules() if r.get("alert") ==
                "SpiffeBridgeOutputWriteFailures")
    result = wait_for(lambda: prom.query(expr), "output write failures", timeout=20)
    assert {s["metric"]["output"] for s in result} == {"aws_process"}


def test_a_delivered_target_goes_stale_when_refreshes_fail(deployment: Deployment) -> None:
    """`skewed` delivered once, then its STS fails: stale in Prometheus and /readyz, still ready."""
    prom = deployment.prometheus
    # Stale from its refresh (~15 s after delivery) until its expiry (60 s after).
    left = SKEWED_LIFETIME - (time.monotonic() - deployment.skewed_delivered_at)
    assert left > 10, "the tests before this one took too long: the credential is expiring"
    wait_for(lambda: prom.query(
        'spiffe_bridge_credential_state{target="skewed",state="stale"} == 1'),
        "the skewed target stale", timeout=min(35, left - 5))
    status, body = deployment.readyz()
    skewed = body["targets"]["skewed"]
    assert skewed["state"] == "stale", (status, body)
    assert skewed["ready"] is True  # the last good credential is still served
    assert skewed["last_error"] == "unavailable"
    assert 0 < skewed["expires_in_seconds"] <= SKEWED_LIFETIME
    # The stale alert's expression (its `for` is 10 minutes) holds for it now.
    stale_expr = next(r["expr"] for r in load_rules() if r.get("alert") ==
                      "SpiffeBridgeTargetStale")
    assert {s["metric"]["target"] for s in prom.query(stale_expr)} == {"skewed"}


def test_no_label_value_carries_a_secret_or_an_arn(deployment: Deployment) -> None:
    """No label value in /metrics, or in what Prometheus stored, has a token, key id or ARN."""
    with urllib.request.urlopen(f"http://{deployment.bridge_address}/metrics",
                                timeout=5) as r:
        text = r.read().decode()
    values: list[tuple[str, str, str]] = []
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            values += [(sample.name, k, v) for k, v in sample.labels.items()]
    for series in deployment.prometheus.api("series", **{"match[]": f'{{job="{JOB}"}}'}):
        values += [(series["__name__"], k, v) for k, v in series.items()]
    labels = {k for _, k, _ in values}
    assert {"target", "stage", "reason", "output", "state", "result"} <= labels  # not vacuous
    leaks = [(n, k, v) for n, k, v in values if any(bad in v for bad in FORBIDDEN_IN_LABELS)]
    assert leaks == []
