"""`spiffe-bridge dev` as a newcomer meets it: the banner's commands, pasted as printed
into a new shell with no virtualenv activated, work; nothing of it stays behind."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import urllib.request
from pathlib import Path

import pytest
import yaml

from tests.support.process import start_bridge, stop
from tests.support.wait import wait_for

pytestmark = pytest.mark.integration
CLEAN_PATH = "/usr/bin:/bin"  # no venv, no ~/.local: what a new login shell may have


def _banner(log: Path) -> str:
    """The banner, once printed in full."""
    return wait_for(lambda: log.read_text() if "Press Ctrl-C" in log.read_text() else None,
                    "the dev banner", detail=lambda: log.read_text()[-2000:])


def _field(banner: str, label: str) -> str:
    match = re.search(rf"^  {re.escape(label)}:\s+(\S+)", banner, re.MULTILINE)
    assert match, f"no {label!r} in the banner:\n{banner}"
    return match.group(1)


def _try_it(banner: str) -> list[str]:
    """The command lines under "Try it in another shell:", as printed."""
    block = banner.split("Try it in another shell:\n", 1)[1].split("\n\n", 1)[0]
    return [line.strip() for line in block.splitlines() if line.strip()]


def _ready(address: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://{address}/readyz", timeout=5) as r:
            return bool(json.loads(r.read())["ready"])
    except OSError:
        return False


def test_the_banner_commands_work_pasted_into_a_clean_shell(short_dir: Path) -> None:
    """Each command the banner prints succeeds in `env -i` bash (PATH /usr/bin:/bin, no
    VIRTUAL_ENV, a fresh HOME): boto3 loads the demo profile, credential-process prints
    the JSON, status shows every target fresh, /readyz says ready, and the workload
    target's credential-process gets this shell's own credential (through the dev
    Broker API). On Ctrl-C the
    temporary directories and the credentials are gone."""
    log = short_dir / "dev.log"
    proc = start_bridge("dev", log=log)
    try:
        banner = _banner(log)
        config = Path(_field(banner, "Bridge config"))
        credentials = Path(_field(banner, "Credentials"))
        address = yaml.safe_load(config.read_text())["http"]["address"]
        wait_for(lambda: _ready(address), "/readyz ready", timeout=30)
        commands = _try_it(banner)
        assert len(commands) == 6, commands
        home = short_dir / "home"
        home.mkdir()
        shell = subprocess.run(
            ["env", "-i", f"PATH={CLEAN_PATH}", f"HOME={home}", "LANG=C.UTF-8",
             "bash", "--noprofile", "--norc", "-euo", "pipefail", "-c",
             "\n".join(f"echo '>>> {i}'\n{c}" for i, c in enumerate(commands))],
            capture_output=True, text=True, timeout=120, check=False, cwd=home)
    finally:
        code, _, _ = stop(proc, signal.SIGINT)
    assert shell.returncode == 0, f"{shell.stdout[-2000:]}\n{shell.stderr[-2000:]}"
    out = shell.stdout.split(">>> ")
    assert "access_key='ASIA" in out[2], out[2][:200]  # boto3's frozen credentials
    process = json.loads(out[3].split("\n", 1)[1])
    assert process["Version"] == 1
    assert process["AccessKeyId"].startswith("ASIA")
    states = {line.split()[0]: line.split()[2] for line in out[4].splitlines()[2:] if line}
    assert states == {"demo": "fresh", "demo-gcp": "fresh", "demo-aws-to-gcp": "fresh",
                      "demo-azure": "fresh", "demo-aws-to-azure": "fresh"}
    assert json.loads(out[5].split("\n", 1)[1])["ready"] is True
    own = json.loads(out[6].split("\n", 1)[1])  # the workload target: this shell's own
    assert own["Version"] == 1
    assert own["AccessKeyId"].startswith("ASIA")
    assert own["AccessKeyId"] != process["AccessKeyId"]
    assert code == 0
    assert not config.parent.exists(), "the dev workdir was left behind"
    assert not credentials.parents[2].exists(), "the dev credentials were left behind"
    assert "credentials removed" in log.read_text()


@pytest.mark.parametrize("keep", [False, True], ids=["removed", "kept"])
def test_workdir_holds_the_outputs_and_keep_keeps_them(short_dir: Path, keep: bool) -> None:
    """--workdir D puts the credentials in D/creds too (nothing on /dev/shm); they are
    removed on exit unless --keep."""
    workdir = short_dir / "dev"
    log = short_dir / "dev.log"
    proc = start_bridge("dev", "--workdir", str(workdir), *(["--keep"] if keep else []),
                        log=log)
    try:
        banner = _banner(log)
        credentials = Path(_field(banner, "Credentials"))
        assert credentials == workdir / "creds" / "aws" / "credentials"
        wait_for(credentials.exists, "the credentials file")
        assert "/dev/shm" not in banner
    finally:
        code, _, _ = stop(proc, signal.SIGINT)
    assert code == 0, log.read_text()[-2000:]
    assert (workdir / "creds").exists() is keep
    assert (workdir / "bridge.yaml").exists()  # the user's directory itself stays
