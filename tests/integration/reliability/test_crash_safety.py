"""kill -9 during writes: every output stays complete (old or new), no temp file outlives
the next start's sweep (RELIABILITY (a) 13-14). 8 daemon kills + 240 forked-writer kills.

See crashkit.py for the harness; each test's docstring says exactly what it kills.
"""

from __future__ import annotations

import random
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge.cli import main
from bridge.devstack import DevStack
from tests.conftest import WriteConfig
from tests.support import values
from tests.support.crashkit import (
    EXPECTED_FILES,
    DaemonKiller,
    ForkKiller,
    Issued,
    ShortLivedStack,
    check_daemon_outputs,
    check_forked_outputs,
    temp_files,
)

pytestmark = pytest.mark.integration

DAEMON_KILLS = 8
FORK_KILLS = 240


@pytest.fixture
def tmpfs_dir() -> Iterator[Path]:
    base = values.tmpfs_dir()
    yield base
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def world(short_dir: Path) -> Iterator[ShortLivedStack]:
    started = ShortLivedStack(short_dir / "stack").start()
    yield started
    started.stop()


def test_sigkilled_daemon_leaves_complete_files_and_its_temps_are_swept(
        world: ShortLivedStack, short_dir: Path, tmpfs_dir: Path) -> None:
    """Kills the real daemon process, `python -m bridge run --config F` (a child of this
    test, SIGKILL), 8 times at random moments: ~15 % during start-up (imports, sweep,
    recover), the rest 0-1.5 s after it logged "running", while it rewrites every file
    (3 AWS targets, 2 GCP, 2 JWT files, 1 external_account file; the lagging STS clocks
    make each credential live 8 s, so each target refreshes every ~2 s and each JWT file
    every 1 s). After each kill: each file parses (configparser / json) and equals one
    complete credential or token the emulators issued, mode 0600; temp files the kill
    left are gone once the next run has logged "running" (its sweep ran). A last run
    stopped with SIGTERM leaves no temp file and a full, valid set of files."""
    outdir = tmpfs_dir / "creds"
    config = world.write_config(short_dir / "bridge.yaml", outdir)
    killer = DaemonKiller(world, config, outdir, short_dir, random.Random())
    started = time.monotonic()
    for _ in range(DAEMON_KILLS):
        killer.kill_once(max_after_running=1.5, early=0.15)
    killer.final_clean_run()
    stats = killer.stats
    figures = (f"{stats.kills} kills in {time.monotonic() - started:.1f}s, "
               f"{stats.kills_mid_write} left temp files, {stats.swept_checks} sweeps checked, "
               f"{len(stats.versions_seen)} versions of aws/a1.json seen")
    assert stats.kills == DAEMON_KILLS
    assert stats.torn == [], figures
    assert stats.leaked == [], figures
    assert stats.swept_checks >= 2, figures
    assert len(world.stack.aws.issued) > DAEMON_KILLS, "the daemon kept refreshing"
    present = {p.relative_to(outdir).as_posix() for p in outdir.rglob("*") if p.is_file()}
    assert present == EXPECTED_FILES, figures
    print(figures)


def test_sigkilled_forked_writers_leave_complete_files_and_temps_are_swept(
        tmpfs_dir: Path) -> None:
    """Kills 240 `os.fork()` children of this test process, each running the real
    `CredentialDirectory(...).prepare()` (the start-up sweep) and then `apply()` in a tight
    loop (2 AWS targets, 1 GCP, 2 JWT files; every pass a new version of every value),
    with SIGKILL at a random 0-4 ms after its sweep finished. After each kill: every file
    parses and is exactly one version a writer produced (each field is recomputed from
    the version the file names, so a mix of two versions or a cut-off file is caught);
    once the next child's prepare() returns, the temp files the kill left are gone."""
    outdir = tmpfs_dir / "creds"
    killer = ForkKiller(outdir, random.Random(), max_offset=0.004)
    started = time.monotonic()
    for _ in range(FORK_KILLS):
        killer.kill_once()
    killer.final_sweep()
    stats = killer.stats
    figures = (f"{stats.kills} kills in {time.monotonic() - started:.1f}s, "
               f"{stats.kills_mid_write} caught a write in flight (temp file left), "
               f"{len(stats.versions_seen)} distinct versions seen")
    assert stats.kills == FORK_KILLS
    assert stats.torn == [], figures
    assert stats.leaked == [], figures
    assert temp_files(outdir) == []
    # The kills do land inside writes: a temp file exists only between its O_EXCL open
    # and the rename, and some kills left one behind.
    assert stats.kills_mid_write >= 3, figures
    assert len(stats.versions_seen) >= FORK_KILLS // 4, figures
    print(figures)


def test_the_checkers_catch_torn_and_mixed_files(tmpfs_dir: Path) -> None:
    """The oracles above are not vacuous: a cut-off file, a field from another version
    and a stray file are each reported."""
    outdir = tmpfs_dir / "creds"
    killer = ForkKiller(outdir, random.Random(1), max_offset=0.002)
    kills = 0
    # At least 3 kills, and until a writer got as far as the files corrupted below (on a
    # loaded machine a 0-2 ms kill can land before the first write).
    needed = ("aws/fa.json", "aws/credentials", "jwt", "gcp")
    while kills < 3 or not all((outdir / f).exists() for f in needed):
        assert kills < 200, "no forked writer ever wrote its files"
        killer.kill_once()
        kills += 1
    seeds = set(range(1, kills + 1))  # ForkKiller numbers its writers' seeds 1, 2, ...
    assert check_forked_outputs(outdir, seeds) == []

    process_json = outdir / "aws" / "fa.json"
    text = process_json.read_text()
    process_json.write_text(text[: len(text) // 2])
    ini = outdir / "aws" / "credentials"
    ini.write_text(ini.read_text().replace("aws_session_token = ", "aws_session_token = x", 1))
    (outdir / "jwt" / "fa.jwt").write_text("eyJ.1.0.fa.truncated")
    (outdir / "gcp" / "stray").write_text("?")
    problems = check_forked_outputs(outdir, seeds)
    assert any(p.startswith("aws/fa.json: does not parse") for p in problems), problems
    assert any(p.startswith("aws/credentials[") for p in problems), problems
    assert any(p.startswith("jwt/fa.jwt") for p in problems), problems
    assert any(p.startswith("gcp/stray") for p in problems), problems

    daemon_dir = tmpfs_dir / "daemon"
    (daemon_dir / "aws").mkdir(parents=True)
    (daemon_dir / "aws" / "credentials").write_text("[a1]\naws_access_key_id = AS")
    (daemon_dir / "aws" / "a1.json").write_text('{"Version": 1, "AccessKeyId": "ASIA')
    for path in (daemon_dir / "aws").iterdir():
        path.chmod(0o600)
    problems = check_daemon_outputs(daemon_dir, Issued(aws={}, gcp=set(), jwt=frozenset()))
    assert len(problems) == 2, problems


def test_a_restart_keeps_a_valid_jwt_file_while_the_agent_is_down(
        stack: DevStack, write_config: WriteConfig, outdir: Path) -> None:
    """README: jwt/<t>.jwt is "kept unexpired", and the last good output is served until
    its real expiry. A second `once` with the agent down must leave the JWT file (valid
    for ~5 more minutes) in place, as it leaves aws/<t>.json in place."""
    config = write_config(jwt_file=True)
    assert main(["once", "--config", str(config)]) == 0
    jwt_file = outdir / "jwt" / "demo.jwt"
    token = jwt_file.read_text()
    stack.workload.stop()
    assert main(["once", "--config", str(config)]) == 1
    assert (outdir / "aws" / "demo.json").exists()
    assert jwt_file.exists(), "the still-valid JWT-SVID file was deleted"
    assert jwt_file.read_text() == token
