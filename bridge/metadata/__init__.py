"""Cloud-metadata emulation: unmodified SDKs read the bridge's credentials through the
endpoints they already know (AWS container provider, EC2 IMDSv2, GCE metadata).

Each configured listener is one `daemon.Service`. They only read the store
(`valid_credential(now)`), never trigger a refresh, and listen on loopback only.
"""

from __future__ import annotations

from bridge.clock import Clock
from bridge.config import Config, TargetConfig
from bridge.logs import Redactor
from bridge.metadata.container import ContainerServer
from bridge.metadata.gce import GceServer
from bridge.metadata.http import LoopbackServer
from bridge.metadata.imds import ImdsServer
from bridge.metrics import Metrics
from bridge.store import CredentialStore

__all__ = ["ContainerServer", "GceServer", "ImdsServer", "LoopbackServer", "metadata_services"]


def metadata_services(config: Config, *, store: CredentialStore, clock: Clock,
                      metrics: Metrics | None = None,
                      redactor: Redactor | None = None) -> list[LoopbackServer]:
    """One listener per configured `metadata.*` section (none when there is none).

    Config validation guarantees the shape: every listener has a target that lists it
    in `serve`, IMDS and GCE exactly one, with the right cloud as its final hop.
    """
    m = config.metadata
    services: list[LoopbackServer] = []

    def serving(kind: str) -> list[TargetConfig]:
        return [t for t in config.targets if kind in t.serve]

    if m.container is not None:
        services.append(ContainerServer(m.container, serving("container"), store=store,
                                        now=clock.time, metrics=metrics, redactor=redactor))
    if m.imds is not None:
        for target in serving("imds")[:1]:
            services.append(ImdsServer(m.imds, target, store=store, now=clock.time,
                                       monotonic=clock.monotonic, metrics=metrics))
    if m.gce is not None:
        for target in serving("gce")[:1]:
            services.append(GceServer(m.gce, target, store=store, now=clock.time,
                                      metrics=metrics))
    return services
