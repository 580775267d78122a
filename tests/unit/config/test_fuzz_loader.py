"""Fuzzing the config loader: any text gives a Config or a ConfigError naming key paths.

`parse_config` is fed (1) arbitrary text, (2) YAML-shaped text built from random trees
and then damaged line by line, and (3) structured mutations of a valid full config
(values swapped for any YAML type, keys dropped, renamed or added, lists and mappings
swapped, targets duplicated). Every outcome must be a `Config` or a `ConfigError`;
nothing else may escape. A ConfigError lists at least one problem, each with a message,
and each names where it is: "" only for a document-level problem (not YAML, empty, not a
mapping), otherwise a key path that walks into the document as far as it exists, any
missing rest being schema words (`workload_api.socket` when the section is absent).
"""

from __future__ import annotations

import copy
import re
import string
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.clouds.aws import AwsHopConfig
from bridge.clouds.gcp import GcpHopConfig
from bridge.config import Config, parse_config
from bridge.errors import ConfigError

FUZZ = settings(max_examples=250, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

VALID: dict[str, Any] = {
    "workload_api": {"socket": "unix:///run/spire/agent.sock", "timeout": "10s"},
    "outputs": {"directory": "/run/spiffe-bridge", "allow_non_tmpfs": False},
    "http": {"address": "127.0.0.1:9464"},
    "refresh": {"concurrency": 8},
    "targets": [
        {"name": "etl-s3", "spiffe_id": "spiffe://example.org/ns/etl/sa/loader",
         "audience": "sts.amazonaws.com", "jwt_file": True,
         "aws": {"role_arn": "arn:aws:iam::111122223333:role/etl-loader",
                 "region": "us-east-1", "duration": "1h", "session_name": "etl-loader",
                 "chain": [{"role_arn": "arn:aws:iam::444455556666:role/tenant-x",
                            "external_id": "tenant-x-secret-id", "duration": "1h"}]}},
        {"name": "bq-writer",
         "gcp": {"workload_identity_provider":
                 "//iam.googleapis.com/projects/123456/locations/global/"
                 "workloadIdentityPools/spire/providers/spire",
                 "service_account": "writer@proj.iam.gserviceaccount.com",
                 "delegates": [], "scopes": ["https://www.googleapis.com/auth/cloud-platform"],
                 "lifetime": "1h"}},
        {"name": "aws-to-gcp",
         "aws": {"role_arn": "arn:aws:iam::111122223333:role/bridge", "region": "us-east-1"},
         "chain": [{"gcp": {"workload_identity_provider":
                            "//iam.googleapis.com/projects/123456/locations/global/"
                            "workloadIdentityPools/from-aws/providers/aws-demo",
                            "service_account": "reader@proj.iam.gserviceaccount.com"}}]},
    ],
}
ENVS = st.sampled_from([
    {}, {"SPIFFE_ENDPOINT_SOCKET": "unix:///run/spire/agent.sock"},
    {"SPIFFE_ENDPOINT_SOCKET": "tcp://127.0.0.1:8081"}, {"SPIFFE_ENDPOINT_SOCKET": "\x00:/"},
])
_SCHEMA_WORDS = re.compile(r"[a-z_]+(\.[a-z_]+)*", re.ASCII)
_SEGMENT = re.compile(r"\[(\d+)\]")


def test_the_valid_base_config_is_valid() -> None:
    """The mutations start from a config the loader accepts."""
    config = parse_config(yaml.safe_dump(VALID), env={})
    assert [t.name for t in config.targets] == ["etl-s3", "bq-writer", "aws-to-gcp"]


def test_an_empty_top_level_key_is_named() -> None:
    """Found by the fuzzer: `'': 1` gives the problem `unknown key` with no key path."""
    with pytest.raises(ConfigError) as err:
        parse_config("'': 1\n", env={})
    unknown = [p for p in err.value.problems if p.message == "unknown key"]
    assert unknown
    assert all(p.path for p in unknown), [str(p) for p in unknown]
    assert [p.path for p in unknown] == ["''"]


def _shown(key: object) -> str:
    """How the loader names a key in a path: blank keys are quoted so they show."""
    text = str(key)
    return text if text.strip() else repr(text)


def _walk(doc: object, path: str) -> str:
    """Follow `path` (`a.b[2].c`) into `doc` as far as it exists; return the rest."""
    node, rest = doc, path
    while rest:
        if m := _SEGMENT.match(rest):
            index = int(m.group(1))
            if not isinstance(node, list) or index >= len(node):
                return rest
            node, rest = node[index], rest[m.end():]
        elif isinstance(node, dict):
            rest = rest.removeprefix(".") if node is not doc else rest
            keys = sorted((_shown(k) for k in node), key=len, reverse=True)
            key = next((k for k in keys if rest == k or (
                rest.startswith(k) and rest[len(k)] in ".[")), None)
            if key is None:
                return rest
            node = next(v for k, v in node.items() if _shown(k) == key)
            rest = rest[len(key):]
        else:
            return rest.removeprefix(".")
    return ""


def check_outcome(text: str, env: dict[str, str]) -> Config | ConfigError:
    """Parse; assert the outcome contract; return it for further checks."""
    try:
        config = parse_config(text, env=env)
    except ConfigError as err:
        outcome: Config | ConfigError = err
    else:
        assert isinstance(config, Config)
        assert config.targets
        names = [t.name for t in config.targets]
        assert len(set(names)) == len(names)
        return config
    assert outcome.problems, "a ConfigError lists its problems"
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError:
        doc = None
    for problem in outcome.problems:
        assert isinstance(problem.message, str)
        assert problem.message
        assert isinstance(problem.path, str)
        if problem.path == "":
            assert not isinstance(doc, dict) or not doc, problem
            continue
        assert isinstance(doc, dict), problem
        rest = _walk(doc, problem.path)
        assert rest == "" or _SCHEMA_WORDS.fullmatch(rest), (problem, rest)
        assert str(problem).startswith(problem.path + ": ")
    return outcome


@FUZZ
@given(text=st.text(max_size=400), env=ENVS)
def test_arbitrary_text_is_a_config_or_a_config_error(text: str, env: dict[str, str]) -> None:
    check_outcome(text, env)


# -- YAML-shaped text ------------------------------------------------------------------

SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.sampled_from(["15m", "1h30m", "0s", "-5m", "12h", "43201", "0600", "0o777", "unix:///x",
                     "unix:relative", "tcp://host:1", "https://sts.example.com", "http://10.0.0.1",
                     "arn:aws:iam::111122223333:role/r", "spiffe://example.org/a",
                     "spiffe://EXAMPLE.org/../a", "/run/x", "../x", "127.0.0.1:0", "[::1]:80",
                     "~", "null", "yes", "!!binary aGk=", "&a", "*a", "{", "- -", "''"]),
)
KEYS = st.one_of(
    st.sampled_from(["workload_api", "socket", "timeout", "outputs", "directory", "http",
                     "address", "refresh", "concurrency", "targets", "name", "spiffe_id",
                     "audience", "jwt_file", "aws", "gcp", "chain", "role_arn", "region",
                     "duration", "session_name", "sts_endpoint", "external_id", "scopes",
                     "workload_identity_provider", "service_account", "delegates", "lifetime",
                     "iam_credentials_endpoint", "external_account_file", "allow_non_tmpfs",
                     "grpc"]),
    st.text(max_size=12), st.integers(), st.booleans(), st.none(),
)
TREES = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=4),
    st.dictionaries(KEYS, inner, max_size=5)), max_leaves=25)


def _dump(tree: object) -> str:
    try:
        return yaml.safe_dump(tree, default_flow_style=False, allow_unicode=True)
    except yaml.YAMLError:
        return repr(tree)


@st.composite
def damaged_yaml(draw: st.DrawFn) -> str:
    lines = _dump(draw(TREES)).splitlines()
    for _ in range(draw(st.integers(0, 4))):
        if not lines:
            break
        i = draw(st.integers(0, len(lines) - 1))
        how = draw(st.sampled_from(["drop", "dup", "indent", "dedent", "char", "cut"]))
        if how == "drop":
            del lines[i]
        elif how == "dup":
            lines.insert(i, lines[i])
        elif how == "indent":
            lines[i] = draw(st.sampled_from(["  ", "\t", "- "])) + lines[i]
        elif how == "dedent":
            lines[i] = lines[i].lstrip()
        elif how == "char":
            pos = draw(st.integers(0, len(lines[i])))
            ch = draw(st.sampled_from([":", "-", "[", "]", "{", "}", "#", "'", '"', "&", "*",
                                       "!", "|", ">", "%", "@", "\t", "\x00", "\ufeff"]))
            lines[i] = lines[i][:pos] + ch + lines[i][pos:]
        else:
            lines[i] = lines[i][: draw(st.integers(0, len(lines[i])))]
    return "\n".join(lines)


@FUZZ
@given(text=damaged_yaml(), env=ENVS)
def test_yaml_shaped_text_is_a_config_or_a_config_error(text: str, env: dict[str, str]) -> None:
    check_outcome(text, env)


# -- structured mutations of the valid config ------------------------------------------


def _paths(node: object, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(node, dict):
        for k, v in node.items():
            found += _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            found += _paths(v, (*prefix, i))
    return found


def _parent(doc: Any, path: tuple[Any, ...]) -> Any:
    node = doc
    for step in path[:-1]:
        node = node[step]
    return node


@st.composite
def mutated_config(draw: st.DrawFn) -> dict[str, Any]:
    doc = copy.deepcopy(VALID)
    for _ in range(draw(st.integers(1, 4))):
        paths = [p for p in _paths(doc) if p]
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent, last = _parent(doc, path), path[-1]
        how = draw(st.sampled_from(["value", "value", "tree", "drop", "unknown", "rename",
                                    "dup", "listify"]))
        if how == "value":
            parent[last] = draw(SCALARS)
        elif how == "tree":
            parent[last] = draw(TREES)
        elif how == "drop":
            del parent[last]
        elif how == "unknown" and isinstance(parent[last], dict):
            parent[last][draw(st.text(string.ascii_letters + "_-. ", min_size=1,
                                      max_size=10))] = draw(SCALARS)
        elif how == "rename" and isinstance(parent, dict):
            parent[draw(KEYS)] = parent.pop(last)
        elif how == "dup" and isinstance(parent, list):
            parent.append(copy.deepcopy(parent[last]))
        elif how == "listify":
            parent[last] = [parent[last]]
    return doc


@FUZZ
@given(doc=mutated_config(), env=ENVS)
def test_mutated_configs_are_a_config_or_a_config_error(doc: dict[str, Any],
                                                        env: dict[str, str]) -> None:
    check_outcome(_dump(doc), env)


@FUZZ
@given(doc=mutated_config())
def test_a_mutated_config_that_loads_still_honours_the_contract(doc: dict[str, Any]) -> None:
    """What loads is within the contract: durations in range, names unique, hops <= 5."""
    outcome = check_outcome(_dump(doc), {})
    if not isinstance(outcome, Config):
        return
    assert 1.0 <= outcome.workload_api.timeout <= 300.0
    assert outcome.outputs.directory.is_absolute()
    for target in outcome.targets:
        assert re.fullmatch(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?", target.name)
        assert 1 <= len(target.hops) <= 5
        for hop in target.hops:
            if isinstance(hop, AwsHopConfig):
                assert 900 <= hop.duration <= 43200
            if isinstance(hop, GcpHopConfig):
                assert 600 <= hop.lifetime <= 43200


@pytest.mark.parametrize("text", ["[]:\n[]:", "{a: 1}: 2\n{a: 1}: 3"])
def test_repeated_collection_keys_are_one_document_error(text: str) -> None:
    """Found by the fuzz above: a list or mapping repeated as a key was reported as a
    duplicate of a key named `None`; it is the document's error (an unhashable key)."""
    outcome = check_outcome(text, {})
    assert isinstance(outcome, ConfigError)
    assert [p.path for p in outcome.problems] == [""]
    assert "unhashable key" in outcome.problems[0].message
