"""Every metric the bridge exports (names are the contract in DESIGN.md).

Registered on an injected registry, never the global one, so tests and embedders get a
clean set. Labels are bounded: target names (validated `[a-z0-9-]`), fixed stage and
reason words, output kinds; never tokens, keys or ARNs.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from bridge import __version__
from bridge.model import State

_P = "spiffe_bridge_"
_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.refresh_total = Counter(
            _P + "refresh_total", "Refresh attempts by outcome.", ["target", "result"],
            registry=registry)
        self.refresh_duration = Histogram(
            _P + "refresh_duration_seconds", "Time spent per refresh stage.",
            ["target", "stage"], buckets=_BUCKETS, registry=registry)
        self.refresh_failures = Counter(
            _P + "refresh_failures_total", "Failed refreshes by stage and classified reason.",
            ["target", "stage", "reason"], registry=registry)
        self.expiry = Gauge(
            _P + "credential_expiry_timestamp_seconds",
            "Expiry (unix time) of the credential currently served.", ["target"],
            registry=registry)
        self.last_success = Gauge(
            _P + "credential_last_success_timestamp_seconds",
            "Unix time of the last successful refresh.", ["target"], registry=registry)
        self.state = Gauge(
            _P + "credential_state", "1 for the target's current state (fresh|stale|expired).",
            ["target", "state"], registry=registry)
        self.svid_expiry = Gauge(
            _P + "svid_expiry_timestamp_seconds",
            "Expiry (unix time) of the latest JWT-SVID fetched for the target.", ["target"],
            registry=registry)
        self.workload_api_up = Gauge(
            _P + "workload_api_up", "1 when the Workload API answered the last call.",
            registry=registry)
        self.grpc_requests = Counter(
            _P + "grpc_requests_total", "gRPC API requests by method and status code.",
            ["method", "code"], registry=registry)
        self.outputs_behind = Gauge(
            _P + "outputs_behind", "1 while a target's files could not be brought up to "
            "date by the last write pass (disk full, read-only): readers of the files get "
            "an older credential or, past its expiry, none.", ["target"], registry=registry)
        self.output_write_failures = Counter(
            _P + "output_write_failures_total", "Failed output writes by output kind.",
            ["output"], registry=registry)
        self.permanent_failure = Gauge(
            _P + "permanent_failure", "1 while a target's last failure was permanent "
            "(needs a config or IAM fix, not a retry).", ["target"], registry=registry)
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
        self._per_target: tuple[Counter | Gauge | Histogram, ...] = (
            self.refresh_total, self.refresh_duration, self.refresh_failures, self.expiry,
            self.last_success, self.state, self.svid_expiry, self.permanent_failure,
            self.outputs_behind)
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
            self.refresh_total.labels(target, result)
        self.set_state(target, State.EXPIRED)
        self.permanent_failure.labels(target).set(0)
        self.outputs_behind.labels(target).set(0)

    def forget_target(self, target: str) -> None:
        """Drop every series of a target a reload removed: it must not export its last
        state for ever."""
        for metric in self._per_target:
            metric.remove_by_labels({"target": target})

    def set_state(self, target: str, state: State) -> None:
        for s in State:
            self.state.labels(target, s.value).set(1 if s is state else 0)
