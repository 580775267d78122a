"""A reload storm against the real daemon process (issue 19, item 7): 50 applied SIGHUPs
while a client calls `GetCredential` every 50 ms and the state metric is read as often.

- not one gRPC call fails: the socket and the store carry over every reload;
- the unchanged target never leaves `fresh` (in gRPC or in the metrics), and it is never
  refreshed by a reload;
- the target the first reload removes loses its file and every series at once.
"""

from __future__ import annotations

import re
import signal
import threading
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from bridge.client import ApiError, BridgeClient
from bridge.devstack import DEMO_ROLE_ARN, DevStack
from bridge.model import State
from tests.conftest import WriteConfig
from tests.support.process import start_bridge, stop, with_http_port
from tests.support.wait import wait_for

pytestmark = pytest.mark.integration
RELOADS = 50
PERIOD = 0.05


def _page(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
        return str(r.read().decode())


def _applied(port: int) -> float:
    found = re.search(r'^spiffe_bridge_config_reloads_total\{result="applied"\} (\S+)$',
                      _page(port), re.M)
    return float(found.group(1)) if found else 0.0


class _Client(threading.Thread):
    """GetCredential("demo") and the demo state metric every 50 ms, bounded."""

    def __init__(self, socket: str, port: int) -> None:
        super().__init__(name="steady-client", daemon=True)
        self._socket, self._port = socket, port
        self.stop = threading.Event()
        self.calls = 0
        self.errors: list[str] = []
        self.not_fresh: list[str] = []

    def run(self) -> None:
        client = BridgeClient(self._socket, timeout=2.0)
        deadline = time.monotonic() + 300
        try:
            while not self.stop.is_set() and time.monotonic() < deadline:
                try:
                    served = client.get_credential("demo")
                    if served.state is not State.FRESH:
                        self.not_fresh.append(f"grpc {served.state}")
                except ApiError as exc:
                    self.errors.append(f"{exc.code}: {exc.detail}"[:200])
                self.calls += 1
                try:
                    page = _page(self._port)
                    if 'spiffe_bridge_credential_state{state="fresh",target="demo"} 1.0' \
                            not in page:
                        self.not_fresh.append("metric")
                except OSError as exc:
                    self.errors.append(f"/metrics: {exc}")
                self.stop.wait(PERIOD)
        finally:
            client.close()


def test_fifty_reloads_drop_no_call_keep_the_unchanged_target_fresh_and_forget_the_removed(
        stack: DevStack, write_config: WriteConfig, outdir: Path) -> None:
    config_path = write_config()
    port = with_http_port(config_path)
    doc = yaml.safe_load(config_path.read_text())
    demo = doc["targets"][0]

    def target(name: str) -> dict[str, object]:
        return {"name": name, "aws": {"role_arn": DEMO_ROLE_ARN, "region": "us-east-1",
                                      "sts_endpoint": stack.aws_sts_url}}

    def reload(*targets: dict[str, object], expect: int) -> None:
        config_path.write_text(yaml.safe_dump({**doc, "targets": [demo, *targets]}))
        proc.send_signal(signal.SIGHUP)
        wait_for(lambda: _applied(port) >= expect, f"reload {expect} applied", timeout=20)

    config_path.write_text(yaml.safe_dump({**doc, "targets": [demo, target("gone")]}))
    proc = start_bridge("run", "--config", str(config_path))
    client = _Client(doc["grpc"]["socket"], port)
    try:
        wait_for(lambda: (outdir / "aws" / "demo.json").exists()
                 and (outdir / "aws" / "gone.json").exists(), "both targets delivered")
        wait_for(lambda: 'target="gone"' in _page(port), "the removed target's series")
        first = (outdir / "aws" / "demo.json").read_text()
        client.start()
        wait_for(lambda: client.calls >= 5, "the steady client running")

        reload(expect=1)  # `gone` removed: its file goes with the new generation's first pass
        wait_for(lambda: not (outdir / "aws" / "gone.json").exists(), "gone.json removed",
                 timeout=2)
        assert 'target="gone"' not in _page(port)
        assert "[gone]" not in (outdir / "aws" / "credentials").read_text()
        for n in range(2, RELOADS + 1):  # an extra target comes and goes
            reload(*([target("extra")] if n % 2 == 0 else []), expect=n)
        time.sleep(0.5)  # the client sees the last reload too
    finally:
        client.stop.set()
        client.join(10)
        code, _, err = stop(proc)
    assert code == 0, err[-3000:]
    assert "Traceback" not in err
    assert client.calls >= RELOADS, client.calls
    assert client.errors == [], client.errors[:5]
    assert client.not_fresh == [], client.not_fresh[:5]
    # `demo` was carried through every reload: the one credential it had, never refreshed.
    assert (outdir / "aws" / "demo.json").read_text() == first
