"""Config builders shared by tests: the valid base document every malformed case breaks
in exactly one place, the table of those cases, and target documents for the dev stack."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import yaml

from bridge.devstack import DEMO_ROLE_ARN, DEMO_SERVICE_ACCOUNT, GCP_PROVIDER, DevStack

ENV_SOCKET = "SPIFFE_ENDPOINT_SOCKET"
FILE_SOCKET = "unix:///run/spire/agent-sockets/api.sock"
OTHER_SOCKET = "unix:///var/run/other-agent/api.sock"

# The valid base every malformed case breaks in exactly one place (two targets, so that
# `targets[1]` paths exist and duplicate names can point at the second one).
BASE: dict[str, Any] = {
    "workload_api": {"socket": FILE_SOCKET, "timeout": "10s"},
    "outputs": {"directory": "/run/spiffe-bridge"},
    "grpc": {"socket": "unix:///run/spiffe-bridge/bridge.sock"},
    "http": {"address": "127.0.0.1:9464"},
    "refresh": {"concurrency": 8},
    "targets": [
        {
            "name": "etl-s3",
            "spiffe_id": "spiffe://example.org/ns/etl/sa/loader",
            "audience": "sts.amazonaws.com",
            "aws": {
                "role_arn": "arn:aws:iam::111122223333:role/etl-loader",
                "region": "us-east-1",
                "duration": "1h",
            },
        },
        {
            "name": "audit",
            "aws": {"role_arn": "arn:aws:iam::444455556666:role/audit", "region": "eu-west-1"},
        },
    ],
}

DROP = object()  # an edit value that removes the key instead of setting it

Key = tuple[str | int, ...]
Edit = tuple[Key, object]


def render(edits: tuple[Edit, ...] = ()) -> str:
    """The base config with `edits` applied, as YAML text."""
    doc = copy.deepcopy(BASE)
    for key, value in edits:
        parent: Any = doc
        for part in key[:-1]:
            parent = parent[part]
        if value is DROP:
            del parent[key[-1]]
        else:
            parent[key[-1]] = value
    return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)


@dataclass(frozen=True)
class Bad:
    """A malformed config, the exact key path its error must name, and what it must say."""

    id: str
    path: str
    says: str  # a regex (case-insensitive) the problem's message must match
    edits: tuple[Edit, ...] = ()
    text: str | None = None

    def render(self) -> str:
        return self.text if self.text is not None else render(self.edits)


def bad(id_: str, path: str, says: str, *edits: Edit) -> Bad:
    return Bad(id_, path, says, edits=edits)


def raw(id_: str, path: str, says: str, text: str) -> Bad:
    return Bad(id_, path, says, text=text)


T0, T1 = ("targets", 0), ("targets", 1)
ARN0, ARN1 = (*T0, "aws", "role_arn"), (*T1, "aws", "role_arn")
NOT_ROLE_ARN = "not an IAM role ARN"
NOT_SOCKET = r"unix:///absolute/path"
NOT_SPIFFE = "not a SPIFFE ID"
NOT_NAME = "not a valid target name"
GCP_TARGET = {
    "name": "bq-writer",
    "gcp": {
        "workload_identity_provider": "//iam.googleapis.com/projects/123456/locations/global/"
        "workloadIdentityPools/spire/providers/spire",
        "service_account": "writer@proj.iam.gserviceaccount.com",
    },
}

MALFORMED: list[Bad] = [
    # unknown keys
    bad("unknown-top-level-key", "bogus", "unknown key", (("bogus",), 1)),
    bad("unknown-nested-key", "targets[0].aws.extra", "unknown key", ((*T0, "aws", "extra"), 1)),
    bad("unknown-workload-api-key", "workload_api.sockets", "unknown key",
        (("workload_api", "sockets"), FILE_SOCKET)),
    bad("unknown-target-key", "targets[1].role_arn", "unknown key",
        ((*T1, "role_arn"), "arn:aws:iam::444455556666:role/audit")),
    bad("near-miss-top-level-key", "output", r"unknown key \(did you mean `outputs`\?\)",
        (("output",), {"directory": "/run/spiffe-bridge"})),
    bad("near-miss-nested-key", "targets[0].aws.rolearn",
        r"unknown key \(did you mean `role_arn`\?\)",
        ((*T0, "aws", "rolearn"), "arn:aws:iam::111122223333:role/etl-loader")),
    # role ARNs
    bad("arn-user", "targets[1].aws.role_arn", NOT_ROLE_ARN,
        (ARN1, "arn:aws:iam::444455556666:user/bob")),
    bad("arn-assumed-role", "targets[1].aws.role_arn", NOT_ROLE_ARN,
        (ARN1, "arn:aws:sts::444455556666:assumed-role/audit/session")),
    bad("arn-11-digit-account", "targets[1].aws.role_arn", NOT_ROLE_ARN,
        (ARN1, "arn:aws:iam::44445555666:role/audit")),
    bad("arn-wrong-partition", "targets[1].aws.role_arn", NOT_ROLE_ARN,
        (ARN1, "arn:aws-xx:iam::444455556666:role/audit")),
    bad("arn-trailing-newline", "targets[1].aws.role_arn", NOT_ROLE_ARN,
        (ARN1, "arn:aws:iam::444455556666:role/audit\n")),
    bad("arn-inner-space", "targets[1].aws.role_arn", NOT_ROLE_ARN,
        (ARN1, "arn:aws:iam::444455556666:role/audit loader")),
    bad("arn-leading-space", "targets[1].aws.role_arn", NOT_ROLE_ARN,
        (ARN1, " arn:aws:iam::444455556666:role/audit")),
    bad("arn-unicode-role-name", "targets[1].aws.role_arn", NOT_ROLE_ARN,
        (ARN1, "arn:aws:iam::444455556666:role/audït")),
    bad("arn-unicode-digit-account", "targets[1].aws.role_arn", NOT_ROLE_ARN,
        (ARN1, "arn:aws:iam::٤٤٤٤٥٥٥٥٦٦٦٦:role/audit")),
    bad("arn-missing", "targets[0].aws.role_arn", "is required", (ARN0, DROP)),
    bad("arn-not-a-string", "targets[0].aws.role_arn", "expected a string", (ARN0, 111122223333)),
    # durations
    bad("duration-bad-unit", "targets[0].aws.duration", "expected a duration",
        ((*T0, "aws", "duration"), "10x")),
    bad("duration-days", "targets[0].aws.duration", "expected a duration",
        ((*T0, "aws", "duration"), "1d")),
    bad("duration-bool", "targets[0].aws.duration", "expected a duration",
        ((*T0, "aws", "duration"), True)),
    bad("timeout-zero", "workload_api.timeout", "at least", (("workload_api", "timeout"), 0)),
    bad("timeout-negative", "workload_api.timeout", "at least", (("workload_api", "timeout"), -5)),
    bad("timeout-bool", "workload_api.timeout", "expected a duration",
        (("workload_api", "timeout"), True)),
    bad("timeout-absurdly-large", "workload_api.timeout", "at most|too large",
        (("workload_api", "timeout"), 10**400)),
    bad("aws-duration-below-15m", "targets[0].aws.duration", "at least 15m",
        ((*T0, "aws", "duration"), "14m")),
    bad("aws-duration-shown-as-written", "targets[0].aws.duration", "at least 15m, got 300s",
        ((*T0, "aws", "duration"), "300s")),
    bad("aws-duration-integer-shown-as-written", "targets[0].aws.duration",
        "at least 15m, got 600$", ((*T0, "aws", "duration"), 600)),
    bad("aws-duration-above-12h", "targets[0].aws.duration", "at most 12h",
        ((*T0, "aws", "duration"), "13h")),
    # target names
    bad("duplicate-target-name", "targets[1].name", "duplicate", ((*T1, "name"), "etl-s3")),
    bad("name-uppercase", "targets[1].name", NOT_NAME, ((*T1, "name"), "Audit")),
    bad("name-underscore", "targets[1].name", NOT_NAME, ((*T1, "name"), "audit_logs")),
    bad("name-leading-dash", "targets[1].name", NOT_NAME, ((*T1, "name"), "-audit")),
    bad("name-64-chars", "targets[1].name", NOT_NAME, ((*T1, "name"), "a" * 64)),
    bad("name-trailing-newline", "targets[1].name", NOT_NAME, ((*T1, "name"), "audit\n")),
    bad("name-missing", "targets[1].name", "is required", ((*T1, "name"), DROP)),
    # Workload API and gRPC sockets
    bad("socket-no-scheme", "workload_api.socket", NOT_SOCKET,
        (("workload_api", "socket"), "/tmp/a.sock")),
    bad("socket-unix-relative", "workload_api.socket", NOT_SOCKET,
        (("workload_api", "socket"), "unix:relative")),
    bad("socket-unix-host", "workload_api.socket", "no host",
        (("workload_api", "socket"), "unix://host/path")),
    bad("socket-query", "workload_api.socket", "query",
        (("workload_api", "socket"), "unix:///tmp/a.sock?x=1")),
    bad("socket-tcp", "workload_api.socket", "not supported",
        (("workload_api", "socket"), "tcp://127.0.0.1:8000")),
    bad("socket-http", "workload_api.socket", NOT_SOCKET,
        (("workload_api", "socket"), "http://127.0.0.1:8000/api.sock")),
    bad("socket-broken-ipv6-host", "workload_api.socket", NOT_SOCKET,
        (("workload_api", "socket"), "unix://[oops/api.sock")),
    bad("grpc-socket-relative", "grpc.socket", NOT_SOCKET,
        (("grpc", "socket"), "unix:bridge.sock")),
    # SPIFFE IDs and audiences
    bad("spiffe-id-wrong-scheme", "targets[0].spiffe_id", NOT_SPIFFE,
        ((*T0, "spiffe_id"), "https://example.org/ns/etl")),
    bad("spiffe-id-uppercase-trust-domain", "targets[0].spiffe_id", NOT_SPIFFE,
        ((*T0, "spiffe_id"), "spiffe://Example.org/ns/etl")),
    bad("spiffe-id-trailing-slash", "targets[0].spiffe_id", NOT_SPIFFE,
        ((*T0, "spiffe_id"), "spiffe://example.org/ns/etl/")),
    bad("spiffe-id-dot-segment", "targets[0].spiffe_id", NOT_SPIFFE,
        ((*T0, "spiffe_id"), "spiffe://example.org/ns/../etl")),
    bad("spiffe-id-trailing-newline", "targets[0].spiffe_id", NOT_SPIFFE,
        ((*T0, "spiffe_id"), "spiffe://example.org/ns/etl\n")),
    bad("audience-empty", "targets[0].audience", "non-empty", ((*T0, "audience"), "")),
    bad("audience-whitespace", "targets[0].audience", "whitespace",
        ((*T0, "audience"), " sts.amazonaws.com")),
    # outputs
    bad("directory-relative", "outputs.directory", "absolute",
        (("outputs", "directory"), "run/spiffe-bridge")),
    bad("directory-dotdot", "outputs.directory", r"'\.\.'",
        (("outputs", "directory"), "/run/../etc/spiffe-bridge")),
    bad("directory-missing", "outputs.directory", "is required", (("outputs", "directory"), DROP)),
    bad("allow-non-tmpfs-string", "outputs.allow_non_tmpfs", "true or false",
        (("outputs", "allow_non_tmpfs"), "yes")),
    # targets as a whole
    bad("targets-missing", "targets", "is required", (("targets",), DROP)),
    bad("targets-empty", "targets", "is required", (("targets",), [])),
    bad("targets-not-a-list", "targets", "expected a list", (("targets",), "etl-s3")),
    bad("target-is-a-string", "targets[1]", "expected a mapping", (T1, "audit")),
    bad("gcp-provider-with-project-id", "targets[1].gcp.workload_identity_provider",
        "project NUMBER", (T1, {**GCP_TARGET, "gcp": {**GCP_TARGET["gcp"],
        "workload_identity_provider": "//iam.googleapis.com/projects/my-project/locations/"
        "global/workloadIdentityPools/spire/providers/spire"}})),
    bad("gcp-bad-service-account", "targets[1].gcp.service_account", "service account",
        (T1, {**GCP_TARGET, "gcp": {**GCP_TARGET["gcp"], "service_account": "writer"}})),
    bad("gcp-delegate-not-an-email", "targets[1].gcp.delegates[0]", "service account",
        (T1, {**GCP_TARGET, "gcp": {**GCP_TARGET["gcp"], "delegates": ["nope"]}})),
    bad("gcp-scope-not-a-url", "targets[1].gcp.scopes[0]", "scope",
        (T1, {**GCP_TARGET, "gcp": {**GCP_TARGET["gcp"], "scopes": ["cloud-platform"]}})),
    bad("gcp-lifetime-above-12h", "targets[1].gcp.lifetime", "at most 12h",
        (T1, {**GCP_TARGET, "gcp": {**GCP_TARGET["gcp"], "lifetime": "13h"}})),
    bad("gcp-and-aws-in-one-target", "targets[1]",
        "needs exactly one of `aws`, `gcp` or `azure` \\(found `aws`, `gcp`\\); "
        "further hops go in `chain`",
        (T1, {**GCP_TARGET, "aws": {"role_arn": "arn:aws:iam::111122223333:role/x",
                                    "region": "us-east-1"}})),
    bad("gcp-after-gcp-in-chain", "targets[1].chain[0].gcp", "delegates",
        (T1, {**GCP_TARGET, "chain": [{"gcp": GCP_TARGET["gcp"]}]})),
    bad("aws-after-gcp-without-sa", "targets[1].chain[0].aws", "service_account",
        (T1, {"name": "x", "gcp": {"workload_identity_provider":
              GCP_TARGET["gcp"]["workload_identity_provider"]},
              "chain": [{"aws": {"role_arn": "arn:aws:iam::111122223333:role/x"}}]})),
    bad("chained-aws-session-over-1h", "targets[1].aws.chain[0].duration", "1h",
        (T1, {"name": "x", "aws": {"role_arn": "arn:aws:iam::111122223333:role/x",
              "region": "us-east-1", "chain": [{"role_arn":
              "arn:aws:iam::444455556666:role/y", "duration": "2h"}]}})),
    bad("chain-hop-with-both-clouds", "targets[1].chain[0]", "exactly one",
        (T1, {"name": "x", "aws": {"role_arn": "arn:aws:iam::111122223333:role/x",
              "region": "us-east-1"}, "chain": [{}]})),
    bad("chained-aws-session-over-1h-in-target-chain", "targets[1].chain[0].aws.duration", "1h",
        (T1, {"name": "x", "aws": {"role_arn": "arn:aws:iam::111122223333:role/x",
              "region": "us-east-1"}, "chain": [{"aws": {"role_arn":
              "arn:aws:iam::444455556666:role/y", "duration": "2h"}}]})),
    bad("gcp-pool-id-too-short", "targets[1].gcp.workload_identity_provider",
        "the pool ID 'ab' breaks the rule; .* pool and provider IDs are 4-32 characters",
        (T1, {**GCP_TARGET, "gcp": {**GCP_TARGET["gcp"], "workload_identity_provider":
              "//iam.googleapis.com/projects/123456/locations/global/workloadIdentityPools/"
              "ab/providers/spire"}})),
    bad("gcp-provider-id-too-long", "targets[1].gcp.workload_identity_provider",
        "the provider ID '" + "p" * 33 + "' breaks the rule",
        (T1, {**GCP_TARGET, "gcp": {**GCP_TARGET["gcp"], "workload_identity_provider":
              "//iam.googleapis.com/projects/123456/locations/global/workloadIdentityPools/"
              "spire/providers/" + "p" * 33}})),
    bad("target-without-cloud", "targets[1]",
        "needs exactly one of `aws`, `gcp` or `azure` \\(found none\\)", ((*T1, "aws"), DROP)),
    # AWS settings
    bad("sts-endpoint-plain-http-remote", "targets[0].aws.sts_endpoint", "https://",
        ((*T0, "aws", "sts_endpoint"), "http://sts.us-east-1.amazonaws.com")),
    bad("sts-endpoint-userinfo-loopback", "targets[0].aws.sts_endpoint", "https://",
        ((*T0, "aws", "sts_endpoint"), "http://127.0.0.1@evil.example.com/")),
    bad("sts-endpoint-broken-ipv6", "targets[0].aws.sts_endpoint", "https://",
        ((*T0, "aws", "sts_endpoint"), "https://[::1")),
    bad("sts-endpoint-backslash-userinfo", "targets[0].aws.sts_endpoint", "backslash",
        ((*T0, "aws", "sts_endpoint"), "http://sts.example.com:80\\@127.0.0.1:1/")),
    bad("sts-endpoint-userinfo-https", "targets[0].aws.sts_endpoint", "userinfo",
        ((*T0, "aws", "sts_endpoint"), "https://user:pw@sts.amazonaws.com/")),
    bad("gcp-iam-endpoint-userinfo", "targets[1].gcp.iam_credentials_endpoint", "userinfo",
        (T1, {**GCP_TARGET, "gcp": {**GCP_TARGET["gcp"],
              "iam_credentials_endpoint": "http://x:1@127.0.0.1:1/"}})),
    bad("region-uppercase", "targets[0].aws.region", "not an AWS region",
        ((*T0, "aws", "region"), "US-EAST-1")),
    bad("region-no-number", "targets[0].aws.region", "not an AWS region",
        ((*T0, "aws", "region"), "us-east")),
    bad("region-trailing-newline", "targets[0].aws.region", "not an AWS region",
        ((*T0, "aws", "region"), "us-east-1\n")),
    bad("region-missing-without-endpoint", "targets[0].aws.region", "is required",
        ((*T0, "aws", "region"), DROP)),
    bad("session-name-slash", "targets[0].aws.session_name", "'/'",
        ((*T0, "aws", "session_name"), "etl/loader")),
    bad("session-name-colon", "targets[0].aws.session_name", "':'",
        ((*T0, "aws", "session_name"), "spiffe:etl")),
    bad("session-name-65-chars", "targets[0].aws.session_name", "2-64",
        ((*T0, "aws", "session_name"), "s" * 65)),
    bad("session-name-trailing-newline", "targets[0].aws.session_name", "2-64",
        ((*T0, "aws", "session_name"), "etl-loader\n")),
    # http and refresh
    bad("http-address-no-port", "http.address", "HOST:PORT", (("http", "address"), "localhost")),
    bad("http-address-hostname", "http.address", "IP address or localhost",
        (("http", "address"), "metrics.example.com:9464")),
    bad("http-address-port-out-of-range", "http.address", "HOST:PORT",
        (("http", "address"), "127.0.0.1:70000")),
    bad("http-address-unicode-digit-port", "http.address", "HOST:PORT",
        (("http", "address"), "127.0.0.1:²")),
    bad("http-address-integer", "http.address", "expected a string", (("http", "address"), 9464)),
    bad("concurrency-zero", "refresh.concurrency", r"1\.\.1024", (("refresh", "concurrency"), 0)),
    bad("concurrency-string", "refresh.concurrency", "expected an integer",
        (("refresh", "concurrency"), "0600")),
    bad("workload-api-not-a-mapping", "workload_api", "expected a mapping",
        (("workload_api",), FILE_SOCKET)),
    # whole documents
    raw("invalid-yaml-mapping", "", r"not valid YAML.*\bline 3\b",
        "outputs:\n  directory: /run/x\ntargets: : oops\n"),
    raw("invalid-yaml-tab", "", r"not valid YAML.*\bline 2\b", "outputs:\n\tdirectory: /run/x\n"),
    raw("empty-file", "", "empty", ""),
    raw("comments-only", "", "empty", "# nothing here\n\n"),
    raw("top-level-list", "", "expected a mapping, got list", "- name: etl-s3\n- name: audit\n"),
    raw("top-level-scalar", "", "expected a mapping, got str", "just a string\n"),
    # serving: the gRPC API, caller authorization, metadata endpoints
    bad("grpc-socket-mode-decimal", "grpc.socket_mode", "file mode",
        (("grpc", "socket_mode"), 660)),
    bad("grpc-socket-mode-word", "grpc.socket_mode", "file mode",
        (("grpc", "socket_mode"), "rw-rw----")),
    bad("grpc-socket-mode-owner-cannot-write", "grpc.socket_mode", "own user read and write",
        (("grpc", "socket_mode"), "0440")),
    bad("grpc-socket-world-open-without-callers", "grpc.socket_mode", "allowed_callers",
        (("grpc", "socket_mode"), "0666")),
    bad("grpc-tcp-not-loopback", "grpc.tcp_address", "loopback",
        (("grpc", "tcp_address"), "0.0.0.0:9465")),
    bad("grpc-tcp-without-callers", "grpc.tcp_address", "allowed_callers",
        (("grpc", "tcp_address"), "127.0.0.1:9465")),
    bad("grpc-audience-padded", "grpc.caller_audience", "whitespace",
        (("grpc", "caller_audience"), " spiffe-bridge")),
    bad("grpc-max-rpcs-zero", "grpc.max_concurrent_rpcs", "1..100000",
        (("grpc", "max_concurrent_rpcs"), 0)),
    bad("grpc-grace-word", "grpc.shutdown_grace", "duration", (("grpc", "shutdown_grace"), "soon")),
    bad("grpc-unknown-key", "grpc.port", "unknown key", (("grpc", "port"), 1)),
    bad("callers-not-a-list", "targets[0].allowed_callers", "list of strings",
        ((*T0, "allowed_callers"), "spiffe://example.org/x")),
    bad("callers-empty", "targets[0].allowed_callers", "is empty", ((*T0, "allowed_callers"), [])),
    bad("callers-not-spiffe", "targets[0].allowed_callers[1]", NOT_SPIFFE,
        ((*T0, "allowed_callers"), ["spiffe://example.org/a", "https://example.org/b"])),
    bad("callers-glob-in-the-middle", "targets[0].allowed_callers[0]", NOT_SPIFFE,
        ((*T0, "allowed_callers"), ["spiffe://example.org/*/reader"])),
    bad("serve-unknown-kind", "targets[0].serve[0]", "not one of", ((*T0, "serve"), ["ecs"])),
    bad("serve-twice", "targets[0].serve", "twice", ((*T0, "serve"), ["container", "container"]),
        (("metadata",), {"container": {"address": "127.0.0.1:9470"}})),
    bad("serve-without-listener", "targets[0].serve", "metadata.container",
        ((*T0, "serve"), ["container"])),
    bad("listener-without-target", "metadata.imds", "no target",
        (("metadata",), {"imds": {"address": "127.0.0.1:9471"}})),
    bad("gce-for-aws-target", "targets[0].serve", "needs a GCP credential",
        ((*T0, "serve"), ["gce"]), (("metadata",), {"gce": {"address": "127.0.0.1:9472"}})),
    bad("imds-for-two-targets", "targets[1].serve", "one identity",
        ((*T0, "serve"), ["imds"]), ((*T1, "serve"), ["imds"]),
        (("metadata",), {"imds": {"address": "127.0.0.1:9471"}})),
    bad("serve-with-allowed-callers", "targets[0].serve", "gRPC only",
        ((*T0, "serve"), ["container"]),
        ((*T0, "allowed_callers"), ["spiffe://example.org/a"]),
        (("metadata",), {"container": {"address": "127.0.0.1:9470"}})),
    bad("metadata-not-loopback", "metadata.container.address", "loopback",
        ((*T0, "serve"), ["container"]),
        (("metadata",), {"container": {"address": "10.0.0.5:9470"}})),
    bad("metadata-token-file-relative", "metadata.container.token_file", "absolute",
        ((*T0, "serve"), ["container"]),
        (("metadata",), {"container": {"address": "127.0.0.1:9470", "token_file": "tok"}})),
    bad("metadata-gce-project-id", "metadata.gce.project_id", "project ID",
        (("targets",), [*BASE["targets"], {**GCP_TARGET, "serve": ["gce"]}]),
        (("metadata",), {"gce": {"address": "127.0.0.1:9472", "project_id": "Bad_Project"}})),
    bad("gce-without-service-account", "targets[2].serve", "service_account",
        (("targets",), [*BASE["targets"], {"name": "direct", "serve": ["gce"], "gcp": {
            "workload_identity_provider": GCP_TARGET["gcp"]["workload_identity_provider"]}}]),
        (("metadata",), {"gce": {"address": "127.0.0.1:9472"}})),
    bad("imds-without-allowed-uids", "metadata.imds.allowed_uids", "is required.*any",
        ((*T0, "serve"), ["imds"]), (("metadata",), {"imds": {"address": "127.0.0.1:9471"}})),
    bad("gce-without-allowed-uids", "metadata.gce.allowed_uids", "is required.*any",
        (("targets",), [*BASE["targets"], {**GCP_TARGET, "serve": ["gce"]}]),
        (("metadata",), {"gce": {"address": "127.0.0.1:9472"}})),
    bad("allowed-uids-a-word", "metadata.imds.allowed_uids", "list of uids or `any`",
        ((*T0, "serve"), ["imds"]),
        (("metadata",), {"imds": {"address": "127.0.0.1:9471", "allowed_uids": "all"}})),
    bad("allowed-uids-empty", "metadata.imds.allowed_uids", "list of uids or `any`",
        ((*T0, "serve"), ["imds"]),
        (("metadata",), {"imds": {"address": "127.0.0.1:9471", "allowed_uids": []}})),
    bad("allowed-uids-negative", "metadata.imds.allowed_uids[1]", "not a uid",
        ((*T0, "serve"), ["imds"]),
        (("metadata",), {"imds": {"address": "127.0.0.1:9471", "allowed_uids": [0, -1]}})),
    bad("allowed-uids-string-uid", "metadata.container.allowed_uids[0]", "not a uid",
        ((*T0, "serve"), ["container"]),
        (("metadata",), {"container": {"address": "127.0.0.1:9470",
                                       "allowed_uids": ["1000"]}})),
    bad("allowed-uids-twice", "metadata.imds.allowed_uids", "twice",
        ((*T0, "serve"), ["imds"]),
        (("metadata",), {"imds": {"address": "127.0.0.1:9471", "allowed_uids": [7, 7]}})),
    bad("exit-on-permanent-not-bool", "refresh.exit_on_permanent_failure", "true or false",
        (("refresh", "exit_on_permanent_failure"), "yes please")),
]


CALLER = "spiffe://example.org/ns/apps/sa/reader"  # the gRPC tests' allowed caller


def aws_target(stack: DevStack, name: str, **extra: object) -> dict[str, object]:
    """A target document for the dev stack's demo role."""
    return {"name": name, "aws": {"role_arn": DEMO_ROLE_ARN, "region": "us-east-1",
                                  "sts_endpoint": stack.aws_sts_url}, **extra}


def gcp_target(stack: DevStack, name: str, **extra: object) -> dict[str, object]:
    """A target document for the dev stack's demo service account."""
    return {"name": name, "gcp": {"workload_identity_provider": GCP_PROVIDER,
                                  "service_account": DEMO_SERVICE_ACCOUNT,
                                  "sts_endpoint": stack.gcp_sts_url,
                                  "iam_credentials_endpoint": stack.gcp_iam_url}, **extra}
