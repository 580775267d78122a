"""The vocabulary every config section is read with: a strict reader over parsed YAML
that records each problem with its key path, and the value checks the sections share.

It sits below both the root config (`bridge.config`) and the clouds' own sections
(`bridge.clouds.<cloud>.config`), so each cloud brings its keys without the config
package knowing them.
"""

from __future__ import annotations

from bridge.schema.checks import (
    check_abs_path,
    check_audience,
    check_endpoint,
    check_host_port,
    check_loopback_address,
    check_spiffe_id,
    check_unix_uri,
    clip,
    is_loopback_host,
)
from bridge.schema.reader import Problems, Section, parse_duration

__all__ = [
    "Problems",
    "Section",
    "check_abs_path",
    "check_audience",
    "check_endpoint",
    "check_host_port",
    "check_loopback_address",
    "check_spiffe_id",
    "check_unix_uri",
    "clip",
    "is_loopback_host",
    "parse_duration",
]
