"""`workload_targets`, `broker` and `workloads`: rules read like targets, placeholders
checked by `check`, each caller's rendering read again."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml

from bridge.config import parse_config
from bridge.errors import ConfigError

ACCOUNT = "111122223333"
BASE: dict[str, Any] = {
    "workload_api": {"socket": "unix:///run/spire/api.sock"},
    "outputs": {"directory": "/run/spiffe-bridge"},
    "broker": {"socket": "unix:///run/spire/broker/broker.sock",
               "agent_id": "spiffe://example.org/spire/agent/*"},
    "workloads": {"grpc_socket": "unix:///run/spiffe-bridge/workload.sock"},
    "metadata": {"imds": {"address": "127.0.0.1:8169", "allowed_uids": "any"}},
    "workload_targets": [{
        "name": "ns-sa-aws",
        "match": "spiffe://example.org/ns/{namespace}/sa/{sa}",
        "aws": {"role_arn": f"arn:aws:iam::{ACCOUNT}:role/{{namespace}}-{{sa}}",
                "region": "us-east-1"},
        "serve": {"grpc": True, "metadata": ["imds"]},
    }],
}


def _parse(doc: dict[str, Any]) -> Any:
    return parse_config(yaml.safe_dump(doc), env={})


def _problems(doc: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(ConfigError) as info:
        _parse(doc)
    found: dict[str, str] = {}
    for p in info.value.problems:
        found[p.path] = f"{found.get(p.path, '')} {p.message}".strip()
    return found


def _edit(**rule: Any) -> dict[str, Any]:
    doc = copy.deepcopy(BASE)
    doc["workload_targets"][0].update(rule)
    return doc


def test_a_rule_without_targets_is_a_config() -> None:
    """Workload targets alone are enough; the rule keeps its serve and placeholders."""
    config = _parse(BASE)
    (rule,) = config.workload_targets
    assert config.targets == ()
    assert rule.placeholders == ("namespace", "sa")
    assert (rule.serve_grpc, rule.serve_metadata) == (True, ("imds",))
    assert config.broker.agent_id == "spiffe://example.org/spire/agent/*"


def test_a_matching_id_renders_the_rule_as_a_target() -> None:
    """The ID's segments fill the placeholders; the result is read as a target."""
    (rule,) = _parse(BASE).workload_targets
    values = rule.values("spiffe://example.org/ns/etl/sa/loader")
    assert values == {"namespace": "etl", "sa": "loader"}
    target = rule.target_for(values)
    assert target.hops[0].role_arn == f"arn:aws:iam::{ACCOUNT}:role/etl-loader"
    assert target.name == "ns-sa-aws"


@pytest.mark.parametrize("spiffe_id", [
    "spiffe://example.org/ns/etl/sa/loader/extra",  # one segment per placeholder
    "spiffe://example.org/ns/etl/sa/",
    "spiffe://other.org/ns/etl/sa/loader",
    "spiffe://example.org/ns/a%2Fb/sa/x",
])
def test_ids_that_do_not_match(spiffe_id: str) -> None:
    (rule,) = _parse(BASE).workload_targets
    assert rule.values(spiffe_id) is None


def test_a_rendered_value_that_fails_a_hop_check_is_that_callers_failure() -> None:
    """`check` accepts the rule (with `x`); a caller whose rendering breaks a hop's own
    check gets a ConfigError for its target only."""
    doc = _edit(aws={"role_arn": "arn:aws:iam::{namespace}:role/r", "region": "us-east-1"},
                match="spiffe://example.org/acct/{namespace}")
    problems = _problems(doc)  # `x` is no account number: the rule cannot work for anyone
    assert "workload_targets[0].aws.role_arn" in problems


@pytest.mark.parametrize(("rule", "path", "words"), [
    ({"aws": {"role_arn": f"arn:aws:iam::{ACCOUNT}:role/{{team}}", "region": "us-east-1"}},
     "workload_targets[0].aws.role_arn", "does not define"),
    ({"match": "spiffe://{td}/ns/{namespace}/sa/{sa}"}, "workload_targets[0].match",
     "trust domain"),
    ({"match": "spiffe://example.org/ns/{a}/{a}"}, "workload_targets[0].match", "twice"),
    ({"match": "spiffe://example.org/ns/{Bad}"}, "workload_targets[0].match", "placeholder"),
    ({"serve": {"metadata": ["gce"]}}, "workload_targets[0].serve.metadata",
     "not configured"),
    ({"serve": {}}, "workload_targets[0].serve", "serves nothing"),
    ({"aws": {"role_arn": f"arn:aws:iam::{ACCOUNT}:role/{{namespace}}", "region": "us-east-1",
              "duration": "1s"}}, "workload_targets[0].aws.duration", "at least"),
], ids=["undefined-placeholder", "placeholder-in-trust-domain", "placeholder-twice",
        "bad-placeholder", "endpoint-not-configured", "serves-nothing", "hop-check"])
def test_rule_problems_name_their_key(rule: dict[str, Any], path: str, words: str) -> None:
    problems = _problems(_edit(**rule))
    assert path in problems, problems
    assert words in problems[path]


def test_imds_needs_a_broker_and_grpc_a_socket() -> None:
    """Without `broker` (broker-less) IMDS cannot tell callers apart: no token to carry
    their SVID; gRPC needs the workload socket."""
    doc = copy.deepcopy(BASE)
    del doc["broker"]
    del doc["workloads"]
    problems = _problems(doc)
    assert "needs `broker`" in problems["workload_targets[0].serve.metadata"]
    assert "workload_targets[0].serve.grpc" in problems


def test_broker_less_rules_serve_grpc_and_container() -> None:
    doc = copy.deepcopy(BASE)
    del doc["broker"]
    doc["metadata"] = {"container": {"address": "127.0.0.1:8170"}}
    doc["workload_targets"][0]["serve"] = {"grpc": True, "metadata": ["container"]}
    assert _parse(doc).broker is None


def test_imds_is_either_a_configured_targets_or_the_workloads() -> None:
    """IMDS serves one identity per caller: a configured target cannot share it."""
    doc = copy.deepcopy(BASE)
    doc["targets"] = [{"name": "node", "aws": {"role_arn": f"arn:aws:iam::{ACCOUNT}:role/n",
                                               "region": "us-east-1"}, "serve": ["imds"]}]
    assert "targets[0].serve" in _problems(doc)


def test_names_are_shared_with_targets() -> None:
    doc = copy.deepcopy(BASE)
    doc["targets"] = [{"name": "ns-sa-aws",
                       "aws": {"role_arn": f"arn:aws:iam::{ACCOUNT}:role/n",
                               "region": "us-east-1"}}]
    assert "workload_targets[0].name" in _problems(doc)


@pytest.mark.parametrize(("key", "value"), [
    ("socket", "tcp://127.0.0.1:8443"), ("agent_id", "not-an-id"), ("timeout", "0s")])
def test_broker_keys_are_checked(key: str, value: str) -> None:
    doc = copy.deepcopy(BASE)
    doc["broker"][key] = value
    assert f"broker.{key}" in _problems(doc)
