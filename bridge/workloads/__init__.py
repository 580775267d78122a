"""Per-workload cloud identities from one node-shared bridge (`workload_targets`).

    lifecycle  each (SPIFFE ID, rule)'s credential: attest, mint, refresh, drop
    grpc       the workload socket (GetCredential/WatchCredential `workload_target`)
    metadata   IMDSv2 and the container provider, each caller its own identity
    assembly   wiring, called by the daemon assembly
"""

from __future__ import annotations

from bridge.workloads.lifecycle import Granted, WorkloadCredentials, WorkloadError

__all__ = ["Granted", "WorkloadCredentials", "WorkloadError"]
