"""A warm restart of the real daemon: every credential is recovered from the directory
and its refresh is spread minutes ahead, so no SVID is fetched at start. The bundle
stream must be opened anyway: without it, callers of restricted targets could not be
verified (UNAVAILABLE) until the first refresh, and a revoked key would go unseen."""

from __future__ import annotations

import time

import pytest

from bridge.client import BridgeClient
from bridge.devstack import FETCH_JWT_SVID, DevStack
from tests.conftest import WriteConfig
from tests.support.configs import CALLER
from tests.support.process import start_bridge, stop
from tests.support.wait import wait_for

pytestmark = pytest.mark.integration


def _served(socket_uri: str, token: str) -> bool:
    client = BridgeClient(socket_uri, svid=lambda: token, timeout=5)
    try:
        return client.get_credential("demo").material is not None
    finally:
        client.close()


def test_a_warm_restart_verifies_callers_before_any_refresh(
        write_config: WriteConfig, stack: DevStack) -> None:
    config = write_config(allowed_callers=[CALLER])
    socket_uri = f"unix://{config.parent}/bridge.sock"
    token = stack.authority.mint(CALLER, ["spiffe-bridge"], 300)
    first = start_bridge("run", "--config", str(config))
    try:
        wait_for(lambda: _served(socket_uri, token), "the first daemon's credential",
                 tolerate=(Exception,))
    finally:
        code, _, err = stop(first)
    assert code == 0, err
    fetched = stack.workload.faults.calls(FETCH_JWT_SVID)
    second = start_bridge("run", "--config", str(config))
    try:
        started = time.monotonic()
        wait_for(lambda: _served(socket_uri, token), "a verified caller after the restart",
                 timeout=10, tolerate=(Exception,))
        assert time.monotonic() - started < 10
        # Served from the recovered credential: no SVID was fetched for it.
        assert stack.workload.faults.calls(FETCH_JWT_SVID) == fetched
    finally:
        code, _, err = stop(second)
    assert code == 0, err
    assert "recovered a valid credential for demo" in err
