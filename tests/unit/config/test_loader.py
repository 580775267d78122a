"""The config contract: typed model, defaults, env precedence and key-path-named errors."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest

from bridge.config import Config, parse_config
from bridge.errors import ConfigError, ConfigProblem
from bridge.serving.grpc.callers import allows
from tests.support.configs import (
    ARN0,
    ARN1,
    BASE,
    DROP,
    ENV_SOCKET,
    FILE_SOCKET,
    GCP_TARGET,
    MALFORMED,
    OTHER_SOCKET,
    T0,
    T1,
    Bad,
    Edit,
    Key,
    render,
)


def _problems(text: str, env: dict[str, str] | None = None) -> tuple[ConfigProblem, ...]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, env={} if env is None else env)
    assert info.value.problems, "a ConfigError must carry at least one problem"
    return info.value.problems


def _at(problems: tuple[ConfigProblem, ...], path: str) -> list[ConfigProblem]:
    return [p for p in problems if p.path == path]


def test_the_base_config_is_valid() -> None:
    """The base that every malformed case breaks is itself accepted."""
    config = parse_config(render(), env={})
    assert [t.name for t in config.targets] == ["etl-s3", "audit"]


FULL = f"""
workload_api:
  socket: {FILE_SOCKET}
  timeout: 90s
outputs:
  directory: /run/spiffe-bridge
  allow_non_tmpfs: true
grpc:
  socket: unix:///run/spiffe-bridge/custom.sock
http:
  address: 127.0.0.1:9500
refresh:
  concurrency: 8
targets:
  - name: etl-s3
    spiffe_id: spiffe://example.org/ns/etl/sa/loader
    audience: sts.amazonaws.com
    jwt_file: true
    aws:
      role_arn: arn:aws:iam::111122223333:role/etl-loader
      region: us-east-1
      duration: 15m
      session_name: etl-loader
      sts_endpoint: https://sts.us-east-1.amazonaws.com
  - name: audit
    audience: audit.example.org
    aws:
      role_arn: arn:aws-us-gov:iam::444455556666:role/path/audit
      region: us-gov-west-1
      duration: 1h30m
"""


def test_a_full_config_round_trips_into_the_typed_model() -> None:
    """Every field of a complete file lands in the typed model with its unit converted."""
    config = parse_config(FULL, env={ENV_SOCKET: OTHER_SOCKET})
    assert isinstance(config, Config)
    assert config.workload_api.socket == FILE_SOCKET
    assert config.workload_api.timeout == 90.0
    assert config.outputs.directory == Path("/run/spiffe-bridge")
    assert config.outputs.allow_non_tmpfs is True
    assert config.grpc.socket == "unix:///run/spiffe-bridge/custom.sock"
    assert config.http_address == "127.0.0.1:9500"
    assert config.refresh.concurrency == 8
    assert len(config.targets) == 2
    etl, audit = config.targets
    assert etl.name == "etl-s3"
    assert etl.spiffe_id == "spiffe://example.org/ns/etl/sa/loader"
    assert etl.audience == "sts.amazonaws.com"
    assert etl.jwt_file is True
    assert etl.hops[0].role_arn == "arn:aws:iam::111122223333:role/etl-loader"
    assert etl.hops[0].region == "us-east-1"
    assert etl.hops[0].duration == 15 * 60.0
    assert etl.hops[0].session_name == "etl-loader"
    assert etl.hops[0].sts_endpoint == "https://sts.us-east-1.amazonaws.com"
    assert audit.name == "audit"
    assert audit.spiffe_id is None
    assert audit.audience == "audit.example.org"
    assert audit.jwt_file is False
    assert audit.hops[0].role_arn == "arn:aws-us-gov:iam::444455556666:role/path/audit"
    assert audit.hops[0].region == "us-gov-west-1"
    assert audit.hops[0].duration == 90 * 60.0
    assert audit.hops[0].session_name is None
    assert audit.hops[0].sts_endpoint is None
    assert config.target("audit") is audit
    assert config.target("missing") is None


@pytest.mark.parametrize(
    ("key", "value", "seconds"),
    [
        (("workload_api", "timeout"), "90s", 90.0),
        (("workload_api", "timeout"), "5m", 300.0),
        (("workload_api", "timeout"), "1m30s", 90.0),
        (("workload_api", "timeout"), 45, 45.0),
        ((*T0, "aws", "duration"), "15m", 900.0),
        ((*T0, "aws", "duration"), "1h", 3600.0),
        ((*T0, "aws", "duration"), "1h30m", 5400.0),
        ((*T0, "aws", "duration"), "12h", 43200.0),
        ((*T0, "aws", "duration"), 7200, 7200.0),
    ],
    ids=["timeout-90s", "timeout-5m", "timeout-1m30s", "timeout-int", "aws-15m", "aws-1h",
         "aws-1h30m", "aws-12h", "aws-int"],
)
def test_durations_accept_units_and_integer_seconds(key: Key, value: object,
                                                    seconds: float) -> None:
    """`90s`, `15m`, `1h`, `1h30m` and bare integers are all read as seconds."""
    config = parse_config(render(((key, value),)), env={})
    got = (config.workload_api.timeout if key[0] == "workload_api"
           else config.targets[0].hops[0].duration)
    assert got == seconds


MINIMAL = """
workload_api:
  socket: unix:///run/spire/agent.sock
outputs:
  directory: /run/spiffe-bridge
targets:
  - name: etl-s3
    aws:
      role_arn: arn:aws:iam::111122223333:role/etl-loader
      region: us-east-1
"""


def test_defaults_fill_everything_the_file_leaves_out() -> None:
    """A minimal file gets the documented defaults (10s, 1h, sts.amazonaws.com, 32)."""
    config = parse_config(MINIMAL, env={})
    assert config.workload_api.timeout == 10.0
    assert config.outputs.allow_non_tmpfs is False
    assert config.refresh.concurrency == 32
    (target,) = config.targets
    assert target.audience == "sts.amazonaws.com"
    assert target.hops[0].duration == 3600.0
    assert target.spiffe_id is None
    assert target.hops[0].session_name is None
    assert target.hops[0].sts_endpoint is None
    assert target.jwt_file is False


@pytest.mark.parametrize(
    "endpoint",
    [
        "http://127.0.0.1:1234",
        "http://localhost:8080/",
        "http://[::1]:9000",
        "https://sts.us-east-1.amazonaws.com",
        "https://sts-fips.us-gov-west-1.amazonaws.com",
    ],
    ids=["http-ipv4-loopback", "http-localhost", "http-ipv6-loopback", "https-regional",
         "https-fips"],
)
def test_sts_endpoint_accepts_https_and_loopback_http(endpoint: str) -> None:
    """https:// anywhere and plain http:// only on loopback (the dev stack, moto)."""
    config = parse_config(render((((*T0, "aws", "sts_endpoint"), endpoint),)), env={})
    assert config.targets[0].hops[0].sts_endpoint == endpoint


def test_region_is_optional_when_an_sts_endpoint_is_given() -> None:
    """An explicit endpoint makes the region optional (it is only used to pick one)."""
    edits: tuple[Edit, ...] = (((*T0, "aws", "region"), DROP),
                               ((*T0, "aws", "sts_endpoint"), "http://127.0.0.1:1234"))
    config = parse_config(render(edits), env={})
    assert config.targets[0].hops[0].sts_endpoint == "http://127.0.0.1:1234"


def test_env_socket_is_used_when_the_file_sets_none() -> None:
    """With no `workload_api.socket` in the file, SPIFFE_ENDPOINT_SOCKET supplies it."""
    text = render(((("workload_api", "socket"), DROP),))
    config = parse_config(text, env={ENV_SOCKET: OTHER_SOCKET})
    assert config.workload_api.socket == OTHER_SOCKET


def test_file_socket_wins_over_the_env() -> None:
    """A socket set in the file is used even when SPIFFE_ENDPOINT_SOCKET is set."""
    config = parse_config(render(), env={ENV_SOCKET: OTHER_SOCKET})
    assert config.workload_api.socket == FILE_SOCKET


def test_a_bad_file_socket_is_not_rescued_by_a_good_env() -> None:
    """The env is a default, not a fallback for a broken file value."""
    text = render(((("workload_api", "socket"), "/tmp/a.sock"),))
    problems = _problems(text, env={ENV_SOCKET: OTHER_SOCKET})
    assert _at(problems, "workload_api.socket")


@pytest.mark.parametrize(
    "value",
    ["/tmp/a.sock", "unix:relative", "unix://host/path", "unix:///tmp/a.sock?x=1",
     "tcp://127.0.0.1:8000"],
    ids=["no-scheme", "unix-relative", "unix-host", "query", "tcp"],
)
def test_a_bad_env_socket_is_reported_under_workload_api_socket(value: str) -> None:
    """A malformed SPIFFE_ENDPOINT_SOCKET is named by key path and says where it came from."""
    text = render(((("workload_api", "socket"), DROP),))
    (problem,) = _at(_problems(text, env={ENV_SOCKET: value}), "workload_api.socket")
    assert ENV_SOCKET in problem.message


def test_no_socket_anywhere_is_required() -> None:
    """Neither the file nor the env naming a socket is an error that mentions both."""
    text = render(((("workload_api", "socket"), DROP),))
    (problem,) = _at(_problems(text, env={}), "workload_api.socket")
    assert "required" in problem.message
    assert ENV_SOCKET in problem.message


@pytest.mark.parametrize("case", MALFORMED, ids=[c.id for c in MALFORMED])
def test_malformed_config_names_the_exact_key_path(case: Bad) -> None:
    """Each malformed file raises ConfigError with a problem at the exact key path."""
    problems = _problems(case.render())
    at_path = _at(problems, case.path)
    assert at_path, f"no problem at {case.path!r}; got {[str(p) for p in problems]}"
    assert any(re.search(case.says, p.message, re.IGNORECASE) for p in at_path), (
        f"{case.path}: expected a message matching {case.says!r}, got "
        f"{[p.message for p in at_path]}")


def test_duplicate_names_point_at_the_later_target_and_cite_the_first() -> None:
    """The duplicate is reported on the repeat, naming where the name was first used."""
    third = copy.deepcopy(BASE["targets"][1])
    third["name"] = "etl-s3"
    problems = _problems(render(((("targets",), [*BASE["targets"], third]),)))
    assert not _at(problems, "targets[0].name")
    (problem,) = _at(problems, "targets[2].name")
    assert "targets[0]" in problem.message


def test_every_problem_is_reported_not_just_the_first() -> None:
    """A file with several independent mistakes lists all of them at once."""
    edits: tuple[Edit, ...] = (
        (("bogus",), True),
        (("workload_api", "timeout"), "10x"),
        (("outputs", "directory"), "relative/dir"),
        (ARN0, "arn:aws:iam::111122223333:user/bob"),
        ((*T1, "name"), "etl-s3"),
        ((*T1, "aws", "region"), "Mars-1"),
        (("refresh", "concurrency"), 0),
    )
    problems = _problems(render(edits))
    expected = {"bogus", "workload_api.timeout", "outputs.directory", "targets[0].aws.role_arn",
                "targets[1].name", "targets[1].aws.region", "refresh.concurrency"}
    assert expected <= {p.path for p in problems}


def test_problems_render_as_path_colon_message() -> None:
    """A problem prints as `path: message`, the form `check` shows operators."""
    (problem,) = _at(_problems(render(((ARN1, "nope"),))), "targets[1].aws.role_arn")
    assert str(problem).startswith("targets[1].aws.role_arn: ")


def test_serving_keys_build_the_model() -> None:
    """Every serving key lands in the typed model; defaults are the documented ones."""
    default = parse_config(render(), env={})
    assert default.grpc.socket_mode == 0o660
    assert default.grpc.caller_audience == "spiffe-bridge"
    assert default.grpc.tcp_address is None
    assert default.metadata.get("container") is None
    assert default.refresh.exit_on_permanent_failure is False
    config = parse_config(render((
        (("grpc",), {"socket": "unix:///run/sb/api.sock", "socket_mode": "0666",
                     "tcp_address": "127.0.0.1:9465", "caller_audience": "bridge",
                     "max_watchers": 10, "shutdown_grace": "2s"}),
        ((*T0, "allowed_callers"), ["spiffe://example.org/ns/etl/*"]),
        ((*T1, "allowed_callers"), ["spiffe://example.org/audit"]),
        (("refresh", "exit_on_permanent_failure"), True),
    )), env={})
    assert config.grpc.socket_mode == 0o666
    assert config.grpc.tcp_address == "127.0.0.1:9465"
    assert config.grpc.max_watchers == 10
    assert config.grpc.shutdown_grace == 2.0
    assert config.targets[0].allowed_callers == ("spiffe://example.org/ns/etl/*",)
    assert config.refresh.exit_on_permanent_failure is True
    targets = copy.deepcopy([*BASE["targets"], GCP_TARGET])
    targets[1]["serve"] = ["container"]
    targets[2]["serve"] = ["gce"]
    served = parse_config(render((
        (("targets",), targets),
        ((*T0, "serve"), ["container", "imds"]),
        (("metadata",), {"container": {"address": "127.0.0.1:9470"},
                         "imds": {"address": "127.0.0.1:9471", "allowed_uids": [1000]},
                         "gce": {"address": "[::1]:9472", "project_id": "my-project",
                                 "allowed_uids": "any"}}),
    )), env={})
    container = served.metadata.get("container")
    assert container is not None
    assert container.address == "127.0.0.1:9470"
    assert str(container.token_file) == "/run/spiffe-bridge/container.token"
    gce = served.metadata.get("gce")
    assert gce is not None
    assert gce.project_id == "my-project"
    assert served.targets[0].serve == ("container", "imds")
    imds = served.metadata.get("imds")
    assert imds is not None
    assert (imds.allowed_uids, gce.allowed_uids, container.allowed_uids) == ((1000,), None, None)


def test_yaml_octal_socket_mode_is_understood() -> None:
    """YAML 1.1 reads an unquoted 0640 as octal (416): accepted as 0o640."""
    text = render().replace("socket: unix:///run/spiffe-bridge/bridge.sock",
                            "socket: unix:///run/spiffe-bridge/bridge.sock\n  socket_mode: 0640")
    assert parse_config(text, env={}).grpc.socket_mode == 0o640


@pytest.mark.parametrize(("pattern", "caller", "allowed"), [
    ("spiffe://example.org/a", "spiffe://example.org/a", True),
    ("spiffe://example.org/a", "spiffe://example.org/a/b", False),
    ("spiffe://example.org/a/*", "spiffe://example.org/a/b", True),
    ("spiffe://example.org/a/*", "spiffe://example.org/a/b/c", True),
    ("spiffe://example.org/a/*", "spiffe://example.org/a", False),
    ("spiffe://example.org/a/*", "spiffe://example.org/a/", False),
    ("spiffe://example.org/a/*", "spiffe://example.org/ab", False),
    ("spiffe://example.org/*", "spiffe://example.org.evil/x", False),
    ("spiffe://example.org/*", "spiffe://example.org/x", True),
])
def test_allowed_callers_patterns(pattern: str, caller: str, allowed: bool) -> None:
    assert allows(pattern, caller) is allowed
