"""`X509SvidSource` on the dev Workload API: the SVID per SPIFFE ID (py-spiffe's
X509Source keeps only one), rotations told by ID, the key held as an object only."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge.devstack import DevStack
from bridge.errors import SourceError
from bridge.sources.x509 import X509SvidSource

pytestmark = pytest.mark.integration
A = "spiffe://example.org/a"
B = "spiffe://example.org/b"


@pytest.fixture
def stack(short_dir: Path) -> Iterator[DevStack]:
    with DevStack(short_dir / "stack", identities=(A, B), x509=True) as started:
        yield started


def test_each_spiffe_id_gets_its_own_svid_and_rotation(stack: DevStack) -> None:
    rotated: list[set[str]] = []
    told = threading.Event()

    def on_rotated(ids: set[str]) -> None:
        rotated.append(ids)
        told.set()

    source = X509SvidSource(stack.workload_socket_uri, timeout=5, now=time.time,
                            on_rotated=on_rotated)
    try:
        a, b = source.fetch(A), source.fetch(B)
        assert (a.spiffe_id, b.spiffe_id) == (A, B)
        assert a.leaf == stack.workload.x509_svid(A).chain[0]
        assert b.leaf == stack.workload.x509_svid(B).chain[0]
        assert "private_key" not in repr(a)
        assert source.current(A) == a.fingerprint
        with pytest.raises(SourceError) as missing:
            source.fetch("spiffe://example.org/nobody")
        assert missing.value.reason == "no_identity"
        stack.workload.rotate_x509_svids()
        assert told.wait(10), "no rotation reported"
        deadline = time.monotonic() + 10
        while {A, B} - set().union(*rotated) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert set().union(*rotated) >= {A, B}
        assert source.fetch(A).fingerprint != a.fingerprint
        assert source.current(A) == source.fetch(A).fingerprint
    finally:
        source.close()


def test_an_expiring_svid_is_refused(stack: DevStack) -> None:
    stack.workload.rotate_x509_svids(ttl=5)
    source = X509SvidSource(stack.workload_socket_uri, timeout=5, now=time.time)
    try:
        with pytest.raises(SourceError) as caught:
            source.fetch(A)
        assert caught.value.reason == "svid_expiring"
    finally:
        source.close()


def test_no_agent_is_a_retryable_unavailable(short_dir: Path) -> None:
    source = X509SvidSource(f"unix://{short_dir}/none.sock", timeout=1, now=time.time)
    with pytest.raises(SourceError) as caught:
        source.fetch(None)
    assert (caught.value.reason, caught.value.retryable) == ("unavailable", True)
