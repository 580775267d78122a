"""The quota a GCP hop's calls count against (PROTOCOLS.md §11, IAM quotas and limits).

Google STS token exchange: 6,000 requests/min per project (the provider's project
number), globally and per region. IAM Credentials generateAccessToken and
generateIdToken: 60,000/min per project (the service account's). A federation hop that
impersonates makes one call of each; STS, ten times tighter, is the scope it is budgeted
in.
"""

from __future__ import annotations

import re

from bridge.clouds.base import Quota

STS_RATE = 6000.0 / 60.0
IAM_RATE = 60000.0 / 60.0
STS_SOURCE = "Google Cloud IAM quotas and limits: STS token exchange 6,000/min per project"
IAM_SOURCE = "Google Cloud IAM quotas and limits: IAM Credentials 60,000/min per project"

_PROJECT = re.compile(r"/projects/([^/]+)/")
_SA_PROJECT = re.compile(r"@([^.]+)\.iam\.gserviceaccount\.com$")


def sts_quota(workload_identity_provider: str) -> Quota:
    m = _PROJECT.search(workload_identity_provider)
    return Quota(scope=f"gcp_sts {m.group(1) if m else 'unknown'}", rate=STS_RATE,
                 source=STS_SOURCE)


def iam_quota(service_account: str) -> Quota:
    m = _SA_PROJECT.search(service_account)
    return Quota(scope=f"gcp_iam {m.group(1) if m else 'unknown'}", rate=IAM_RATE,
                 source=IAM_SOURCE)
