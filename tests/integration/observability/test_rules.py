"""The alert and recording rules: promtool accepts and unit-tests them, every alert is
covered both firing and not firing, and every alert links to a runbook section."""

from __future__ import annotations

import re
import subprocess

import pytest
import yaml

from tests.support.prometheus import (
    ALERTS,
    PROMTOOL_TESTS,
    RUNBOOK,
    alert_rules,
    github_anchor,
    load_rules,
    require_tool,
)

RUNBOOK_URL = re.compile(r"^deploy/prometheus/RUNBOOK\.md#(?P<anchor>[a-z0-9-]+)$")


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    promtool = require_tool("promtool")
    return subprocess.run([promtool, *args], capture_output=True, text=True, timeout=60,
                          check=False)


def test_promtool_check_rules_accepts_the_rules_file() -> None:
    """`promtool check rules deploy/prometheus/alerts.yaml` succeeds."""
    proc = _promtool("check", "rules", str(ALERTS))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"SUCCESS: {len(load_rules())} rules found" in proc.stdout


def test_promtool_unit_tests_pass() -> None:
    """`promtool test rules deploy/prometheus/promtool-tests.yaml` succeeds."""
    proc = _promtool("test", "rules", str(PROMTOOL_TESTS))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


def test_every_alert_is_unit_tested_firing_and_not_firing() -> None:
    """Each alert has a promtool case expecting it to fire and one expecting silence."""
    doc = yaml.safe_load(PROMTOOL_TESTS.read_text())
    firing: set[str] = set()
    silent: set[str] = set()
    for case in doc["tests"]:
        for check in case.get("alert_rule_test", []):
            (firing if check.get("exp_alerts") else silent).add(check["alertname"])
    names = {rule["alert"] for rule in alert_rules()}
    assert names - firing == set(), "alerts never tested firing"
    assert names - silent == set(), "alerts never tested silent"
    assert (firing | silent) - names == set(), "tests for alerts that do not exist"


def test_the_required_alerts_exist() -> None:
    """The alerts the issue asks for are all defined, each with a severity."""
    rules = {rule["alert"]: rule for rule in alert_rules()}
    for name in ("SpiffeBridgeCredentialExpiringSoon", "SpiffeBridgeTargetStale",
                 "SpiffeBridgeRefreshFailing", "SpiffeBridgePermanentFailure",
                 "SpiffeBridgeWorkloadApiDown", "SpiffeBridgeDown",
                 "SpiffeBridgeOutputWriteFailures", "SpiffeBridgeX509SvidExpiringSoon"):
        assert name in rules
        assert rules[name]["labels"]["severity"] in {"warning", "critical"}
    assert 'up{job="spiffe-bridge"} == 0' in rules["SpiffeBridgeDown"]["expr"]
    assert 'absent(up{job="spiffe-bridge"})' in rules["SpiffeBridgeDown"]["expr"]


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda r: str(r["alert"]))
def test_alert_annotations_link_to_an_existing_runbook_section(rule: dict[str, object]) -> None:
    """summary, description and runbook_url are set; the URL's anchor is a RUNBOOK heading."""
    annotations = rule["annotations"]
    assert isinstance(annotations, dict)
    assert annotations["summary"].strip()
    assert annotations["description"].strip()
    match = RUNBOOK_URL.match(annotations["runbook_url"])
    assert match, annotations["runbook_url"]
    headings = {github_anchor(line.lstrip("#"))
                for line in RUNBOOK.read_text().splitlines() if line.startswith("## ")}
    assert match["anchor"] in headings
    assert match["anchor"] == github_anchor(str(rule["alert"]))
