"""The fleet keys of `refresh:` (node_id, fleet_size, scope_rates, coalesce): typed model
and one clear error per bad value, naming its key."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from bridge.config import parse_config
from bridge.errors import ConfigError
from tests.support.configs import render


def _refresh(**keys: object) -> str:
    return render((((("refresh",), {"concurrency": 8, **keys})),))


def test_fleet_keys_build_the_model_with_documented_defaults() -> None:
    """Defaults: one bridge, no scope rates, no coalescing, node from the environment."""
    default = parse_config(render(), env={}).refresh.fleet
    assert (default.node_id, default.fleet_size, dict(default.scope_rates), default.coalesce) \
        == ("", 1, {}, False)
    fleet = parse_config(_refresh(node_id="ip-10-0-0-1", fleet_size=10000, coalesce=True,
                                  scope_rates={"aws_sts 111122223333 us-east-1": 0.05,
                                               "gcp_sts 123456": 2}), env={}).refresh.fleet
    assert fleet.node_id == "ip-10-0-0-1"
    assert fleet.fleet_size == 10000
    assert fleet.coalesce is True
    assert fleet.node_index is None
    assert parse_config(_refresh(node_index=17, fleet_size=20), env={}).refresh.fleet \
        .node_index == 17
    assert dict(fleet.scope_rates) == {"aws_sts 111122223333 us-east-1": 0.05,
                                       "gcp_sts 123456": 2.0}


@pytest.mark.parametrize(("keys", "path", "says"), [
    ({"fleet_size": 0}, "refresh.fleet_size", r"must be 1\.\."),
    ({"fleet_size": "many"}, "refresh.fleet_size", "expected an integer"),
    ({"node_id": ""}, "refresh.node_id", "non-empty"),
    ({"scope_rates": [1]}, "refresh.scope_rates", "expected a mapping"),
    ({"scope_rates": {"aws_sts 1 us-east-1": 0}}, "refresh.scope_rates.aws_sts 1 us-east-1",
     "above 0"),
    ({"scope_rates": {"aws_sts 1 us-east-1": "fast"}},
     "refresh.scope_rates.aws_sts 1 us-east-1", "expected a number"),
    ({"scope_rates": {"arn:aws:iam::1:role/x": 1}}, "refresh.scope_rates.arn:aws:iam::1:role/x",
     "is not a quota scope"),
    ({"coalesce": "yes"}, "refresh.coalesce", "expected true or false"),
    ({"node_index": -1}, "refresh.node_index", r"must be a whole number 0\.\."),
    ({"node_index": "ip-10-0-0-1"}, "refresh.node_index", "expected an integer"),
    ({"fleet_sise": 3}, "refresh.fleet_sise", "did you mean `fleet_size`"),
], ids=["fleet-zero", "fleet-text", "node-empty", "rates-list", "rate-zero", "rate-text",
        "scope-arn", "coalesce-text", "index-negative", "index-text", "misspelt"])
def test_bad_fleet_keys_name_their_key(keys: dict[str, object], path: str, says: str) -> None:
    """Each bad value is one problem at its own key path, with a clear message."""
    with pytest.raises(ConfigError) as info:
        parse_config(_refresh(**keys), env={})
    found = [p for p in info.value.problems if p.path == path]
    assert found, [str(p) for p in info.value.problems]
    assert re.search(says, found[0].message, re.IGNORECASE), found[0].message


def test_check_reports_a_bad_fleet_key_in_one_line_without_a_traceback(tmp_path: Path) -> None:
    """`check` exits 2 and names `refresh.fleet_size`; no traceback reaches the operator."""
    config = tmp_path / "bridge.yaml"
    config.write_text(_refresh(fleet_size=-3))
    proc = subprocess.run([sys.executable, "-m", "bridge", "check", "--config", str(config)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 2
    assert "refresh.fleet_size" in proc.stderr + proc.stdout
    assert "Traceback" not in proc.stderr
