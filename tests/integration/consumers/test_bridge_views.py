"""The two views the matrix compares consumers with agree: the bridge's files (what
the poller records) and the daemon's gRPC answer (`spiffe-bridge credential-process`)."""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest

from tests.integration.consumers.conftest import AWS_TARGET, World, parse_time, sha

pytestmark = pytest.mark.integration


def test_credential_process_matches_the_files(world: World) -> None:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(world.home),
           **world.bridge_cli_env}
    for _ in range(5):  # a refresh may land between the two reads
        proc = subprocess.run([str(world.bridge_cli), "credential-process", "--target",
                               AWS_TARGET, "--config", str(world.config)], env=env,
                              capture_output=True, text=True, timeout=30, check=False)
        assert proc.returncode == 0, proc.stderr[-1500:]
        doc = json.loads(proc.stdout)
        world.poller.poll()
        held = world.poller.aws_held()
        fp = sha(doc["AccessKeyId"] + doc["SessionToken"])
        if fp in held:
            assert doc["Version"] == 1
            assert parse_time(doc["Expiration"]) == held[fp].expires_at
            return
        time.sleep(0.5)
    raise AssertionError("credential-process never matched the files")
