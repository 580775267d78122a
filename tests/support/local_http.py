"""One HTTP request to a local endpoint, for the metadata and health tests."""

from __future__ import annotations

import http.client
from collections.abc import Mapping

from bridge.metrics import Metrics


def call(port: int, method: str = "GET", path: str = "/", *,
         headers: Mapping[str, str] | None = None,
         conn: http.client.HTTPConnection | None = None) -> tuple[int, dict[str, str], bytes]:
    """One request; `Host` defaults to 127.0.0.1:port (http.client's own choice)."""
    c = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        c.request(method, path, headers=dict(headers or {}))
        r = c.getresponse()
        return r.status, dict(r.getheaders()), r.read()
    finally:
        if conn is None:
            c.close()


def count(metrics: Metrics, name: str, **labels: str) -> float:
    """A sample's value, 0 when the series does not exist yet."""
    value = metrics.registry.get_sample_value(name, labels)
    return value or 0.0
