"""A botocore session without `endpoints.json`: 7 MB the bridge does not need.

botocore parses its whole legacy endpoint file (every partition, every service, every
region: about 7 MB of Python objects) when a session makes its first client, for ever.
Since the endpoint rulesets, a client's URL comes from the service's own ruleset; the
legacy resolver only says, per region, the partition, the default host name and the
signing region, and for STS those follow from the partitions file alone (`services`
empty: every region takes its partition's defaults). So the session gets a resolver
built from `partitions.json` (40 KB) instead, without its `*-global` pseudo-regions,
which the legacy file does not list as regions either.

This reaches into botocore's session (`_internal_components`, where it keeps the
resolver), so it falls back to botocore's own resolver when that is not there, and a
test compares the two for every region of every partition, signed and unsigned.
"""

from __future__ import annotations

import logging
from typing import Any

from botocore.regions import EndpointResolver

log = logging.getLogger(__name__)


def slim_resolver(session: Any) -> EndpointResolver:
    """An endpoint resolver for `session` made from its partitions data only."""
    partitions = session.get_component("data_loader").load_data("partitions")
    return EndpointResolver({"version": 3, "partitions": [{
        "partition": p["id"],
        "dnsSuffix": p["outputs"]["dnsSuffix"],
        "regionRegex": p["regionRegex"],
        "regions": {r: {"description": v.get("description", r)}  # not the `*-global`
                    for r, v in p["regions"].items() if not r.endswith("-global")},
        "defaults": {"hostname": "{service}.{region}.{dnsSuffix}", "protocols": ["https"],
                     "signatureVersions": ["v4"]},
        "services": {},
    } for p in partitions["partitions"]]}, uses_builtin_data=True)


def slim(session: Any) -> Any:
    """`session`, resolving endpoints without `endpoints.json` (botocore's own resolver
    when this botocore keeps it elsewhere)."""
    components = getattr(session, "_internal_components", None)
    if components is None or not hasattr(components, "register_component"):
        log.debug("botocore keeps its endpoint resolver elsewhere: using its own")
        return session
    components.register_component("endpoint_resolver", slim_resolver(session))
    return session
