"""Every metric the bridge exports (names are the contract in DESIGN.md).

Process-wide metrics are registered on an injected registry, never the global one, so
tests and embedders get a clean set. Per-target ones (one set of series per target, the
bulk at scale) are `series.TargetFamily`s, formatted once per change; `render()` is the
whole `/metrics` page. Labels are bounded: target names (validated `[a-z0-9-]`), fixed
stage and reason words, output kinds; never tokens, keys or ARNs. No `_created` series:
no dashboard or alert reads them, and they doubled every counter.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, generate_latest
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from bridge import __version__
from bridge.model import State
from bridge.series import TargetFamily

_P = "spiffe_bridge_"
_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_WAIT_BUCKETS = (0.01, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0)
_HEADROOM_BUCKETS = (60.0, 120.0, 300.0, 600.0, 900.0, 1200.0, 1500.0, 1800.0, 2400.0,
                     3600.0, 7200.0, 21600.0, 43200.0)


class Metrics:
    """The bridge's metrics: a registry for the process-wide ones, target families for
    the rest (see the module docstring)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        # prometheus-client's own switch, process-wide: no `_created` series anywhere
        # (this process exports one registry; nothing reads them).
        prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = registry
        self.refresh_total = TargetFamily(
            _P + "refresh_total", "Refresh attempts by outcome.", "counter", ("result",))
        self.refresh_duration = Histogram(
            _P + "refresh_duration_seconds", "Time spent per refresh stage, all targets.",
            ["stage"], buckets=_BUCKETS, registry=registry)
        self.refresh_failures = TargetFamily(
            _P + "refresh_failures_total", "Failed refreshes by stage and classified reason.",
            "counter", ("stage", "reason"))
        self.expiry = TargetFamily(
            _P + "credential_expiry_timestamp_seconds",
            "Expiry (unix time) of the credential currently served.", "gauge")
        self.last_success = TargetFamily(
            _P + "credential_last_success_timestamp_seconds",
            "Unix time of the last successful refresh.", "gauge")
        self.state = TargetFamily(
            _P + "credential_state", "1 for the target's current state (fresh|stale|expired).",
            "gauge", ("state",))
        self.svid_expiry = TargetFamily(
            _P + "svid_expiry_timestamp_seconds",
            "Expiry (unix time) of the latest JWT-SVID fetched for the target.", "gauge")
        self.next_refresh = TargetFamily(
            _P + "next_refresh_timestamp_seconds",
            "When (unix time) the target's next refresh or retry is due.", "gauge")
        # scope: a quota scope in bounded words (`aws_sts <account> <region>`,
        # `gcp_sts <project number>`): configured accounts and projects, never ARNs.
        self.quota_calls = Counter(
            _P + "quota_calls_total", "Cloud calls made, by quota scope.", ["scope"],
            registry=registry)
        self.quota_wait = Histogram(
            _P + "quota_wait_seconds", "Time a call waited for a token of its quota "
            "scope's budget.", ["scope"], buckets=_WAIT_BUCKETS, registry=registry)
        self.quota_throttles = Counter(
            _P + "quota_throttles_total", "Throttling answers (Throttling, 429, "
            "RESOURCE_EXHAUSTED) by quota scope; each slows the scope's budget.",
            ["scope"], registry=registry)
        self.quota_rate = Gauge(
            _P + "quota_rate", "Calls per second this bridge may make now in the scope "
            "(its share of the quota, less what throttling took).", ["scope"],
            registry=registry)
        self.refresh_headroom = Histogram(
            _P + "refresh_headroom_seconds", "Validity left on the credential a refresh "
            "replaced: shrinking headroom means refreshes run late (budgets, outages).",
            buckets=_HEADROOM_BUCKETS, registry=registry)
        self.x509_svid_expiry = TargetFamily(
            _P + "x509_svid_expiry_timestamp_seconds",
            "Expiry (unix time, the leaf's notAfter) of the X.509-SVID the target's latest "
            "credential was made with (`source: x509` targets).", "gauge")
        self.x509_rotations = TargetFamily(
            _P + "x509_svid_rotations_total",
            "X.509-SVID rotations that made the target refresh before its schedule.",
            "counter")
        self.workload_api_up = Gauge(
            _P + "workload_api_up", "1 when the Workload API answered the last call.",
            registry=registry)
        # reason: no_kid | unsupported_kty | malformed_key | duplicate_kid | malformed_bundle
        self.bundle_keys_skipped = Counter(
            _P + "bundle_keys_skipped_total", "JWT bundle keys (or whole trust-domain "
            "documents: malformed_bundle) skipped as unusable, per bundle update received.",
            ["reason"], registry=registry)
        self.grpc_requests = Counter(
            _P + "grpc_requests_total", "gRPC API requests by method and status code.",
            ["method", "code"], registry=registry)
        self.outputs_behind = TargetFamily(
            _P + "outputs_behind", "1 while a target's files could not be brought up to "
            "date by the last write pass (disk full, read-only): readers of the files get "
            "an older credential or, past its expiry, none.", "gauge")
        self.clock_steps = Counter(
            _P + "clock_steps_total", "Steps of this host's wall clock (beyond 1 s against "
            "the monotonic clock): each re-dates every expiry written for SDKs.",
            registry=registry)
        self.output_write_failures = Counter(
            _P + "output_write_failures_total", "Failed output writes by output kind.",
            ["output"], registry=registry)
        self.permanent_failure = TargetFamily(
            _P + "permanent_failure", "1 while a target's last failure was permanent "
            "(needs a config or IAM fix, not a retry).", "gauge")
        # endpoint: container | imds | gce; code: the HTTP status; reason: host |
        # forwarded | flavor | token | busy (fixed words, never a header value).
        self.metadata_requests = Counter(
            _P + "metadata_requests_total",
            "Cloud-metadata emulation requests by endpoint and HTTP status.",
            ["endpoint", "code"], registry=registry)
        self.metadata_refusals = Counter(
            _P + "metadata_refusals_total",
            "Metadata requests turned away before routing (foreign Host, proxied, no "
            "Metadata-Flavor, missing or wrong token, too many connections), by reason.",
            ["endpoint", "reason"], registry=registry)
        self.clock_skew = Gauge(
            _P + "clock_skew_seconds", "Server time minus this host's, from the Date header "
            "of the latest STS/IAM response (1 s resolution).", ["service"], registry=registry)
        self.config_reloads = Counter(
            _P + "config_reloads_total", "SIGHUP reloads by result (applied, unchanged, "
            "rejected).", ["result"], registry=registry)
        self.config_rejected = Gauge(
            _P + "config_rejected", "1 while the config file on disk was rejected by the "
            "last reload (the previous config keeps running).", registry=registry)
        for result in ("applied", "unchanged", "rejected"):
            self.config_reloads.labels(result)
        # Per-workload identities (workload_targets): labels are rule names and fixed
        # words only, never a workload's SPIFFE ID, pid or uid (bounded cardinality).
        self.workload_identities = Gauge(
            _P + "workload_identities", "Workload identities (SPIFFE ID, rule) whose "
            "credential is held and refreshed, by rule.", ["rule"], registry=registry)
        # result: ok | denied | unavailable | limit | failed
        self.workload_requests = Counter(
            _P + "workload_requests_total", "Workload credential requests by rule and "
            "result.", ["rule", "result"], registry=registry)
        self.workload_limit = Counter(
            _P + "workload_identity_limit_total", "Workload requests refused because "
            "workloads.max_identities identities are already held.", ["rule"],
            registry=registry)
        self.workload_refresh = Counter(
            _P + "workload_refresh_total", "Workload credential exchanges (first mint and "
            "refreshes) by rule and result.", ["rule", "result"], registry=registry)
        # reason: idle | gone | failed
        self.workload_dropped = Counter(
            _P + "workload_dropped_total", "Workload identities dropped, by rule and reason.",
            ["rule", "reason"], registry=registry)
        self.broker_up = Gauge(
            _P + "broker_up", "1 when the SPIRE agent's SPIFFE Broker API answered the last "
            "call.", registry=registry)
        self.targets: tuple[TargetFamily, ...] = (
            self.refresh_total, self.refresh_failures, self.expiry, self.last_success,
            self.state, self.svid_expiry, self.x509_svid_expiry, self.x509_rotations,
            self.permanent_failure, self.outputs_behind, self.next_refresh)
        Info(_P + "build", "Build information.", registry=registry).info(
            {"version": __version__})
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)

    def init_outputs(self, outputs: Iterable[str]) -> None:
        """Create the write-failure series of every output kind (the clouds' files, jwt,
        directory), so increase() sees the first failure, too."""
        for output in outputs:
            self.output_write_failures.labels(output)

    def init_target(self, target: str) -> None:
        """Create every per-target series at start, so dashboards and alerts see zeros."""
        for result in ("success", "failure"):
            self.refresh_total.labels(target, result).inc(0)
        self.set_state(target, State.EXPIRED)
        self.permanent_failure.labels(target).set(0)
        self.outputs_behind.labels(target).set(0)

    def forget_target(self, target: str) -> None:
        """Drop every series of a target a reload removed: it must not export its last
        state for ever."""
        for family in self.targets:
            family.remove_target(target)

    def render(self) -> bytes:
        """The whole `/metrics` page (Prometheus text format 0.0.4)."""
        return generate_latest(self.registry) + "".join(
            f.render() for f in self.targets).encode()

    def sample(self, name: str, **labels: str) -> float | None:
        """One sample's value by name and labels (process-wide or per target), or None."""
        for family in self.targets:
            if family.name == name:
                target = labels.pop("target", "")
                rest = tuple(labels.get(n, "") for n in family.labelnames[1:])
                return family.get(target, rest)
        return self.registry.get_sample_value(name, labels)

    def scope_added(self, scope: str, rate: Callable[[], float]) -> None:
        """A quota scope's budget was made (`refresh.budget.BudgetObserver`)."""
        self.quota_calls.labels(scope)
        self.quota_throttles.labels(scope)
        self.quota_rate.labels(scope).set_function(rate)

    def called(self, scope: str, waited: float) -> None:
        self.quota_calls.labels(scope).inc()
        self.quota_wait.labels(scope).observe(waited)

    def throttled(self, scope: str) -> None:
        self.quota_throttles.labels(scope).inc()

    def set_state(self, target: str, state: State) -> None:
        for s in State:
            self.state.labels(target, s.value).set(1 if s is state else 0)
