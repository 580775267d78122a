"""Fault scenarios at the credential directory, RELIABILITY.md (a) row 12.

- Row 12, disk full or read-only tmpfs at runtime: the write fails cleanly, the previous
  (still valid) files stay whole, the failures are counted in
  `spiffe_bridge_output_write_failures_total`, the write is retried every 1-3 s with the
  newest credentials only, and succeeds once space (or write access) returns. A real
  64 KiB tmpfs is filled or remounted read-only (needs root, as tests/unit/test_outputs.py).

Row 13 (torn reads) is asserted by the never-expired checker in every scenario, and by
tests/integration/reliability/test_crash_safety.py under kill -9; row 14 is
test_sigterm.py.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from bridge.outputs.writer import LONG_RETRY
from bridge.serving.health import readiness
from tests.support.expiry import (
    MakeScenario,
    Scenario,
    channels,
    digest,
    temp_files,
)
from tests.support.values import fill_until_full

pytestmark = pytest.mark.integration
FILES = ("aws/aws.json", "aws/credentials", "gcp/gcp.json", "gcp/gcp.token")
RETRY_MAX = 3.0  # the writer retries a failed pass after 1-3 s


def _write_failures(s: Scenario) -> float:
    total = 0.0
    for family in s.bridge.daemon.metrics.registry.collect():
        for sample in family.samples:
            if sample.name == "spiffe_bridge_output_write_failures_total":
                total += sample.value
    return total


def _store_digests(s: Scenario) -> set[str]:
    aws, gcp = s.status("aws").credential, s.status("gcp").credential
    return {digest(aws.material.access_key_id), digest(gcp.material.access_token)}


def _file_digests(s: Scenario) -> set[str]:
    sweep = s.checker.sweep()
    return {sweep.reads[f"file:{rel}"].credential or "" for rel in FILES}


def _break_and_recover(s: Scenario, break_: Callable[[], object], repair: Callable[[], object],
                       reason: str, caplog: pytest.LogCaptureFixture) -> None:
    vt = s.vt
    s.sweep()  # the files are written
    before = {rel: (s.outdir / rel).read_bytes() for rel in FILES}
    old = _store_digests(s)
    break_()
    try:
        statuses = s.bridge.refresh_all()  # new credentials reach the store
        assert [st.state for st in statuses] == ["fresh", "fresh"]
        new = _store_digests(s)
        assert new.isdisjoint(old)
        s.wait_for(lambda: _write_failures(s) >= 1, "the write to fail")
        failed = _write_failures(s)
        # The previous files are kept whole (still valid), and no temp file is left.
        assert {rel: (s.outdir / rel).read_bytes() for rel in FILES} == before
        assert temp_files(s.outdir) == []
        assert _file_digests(s) == old
        assert s.checker.sweep().served() == channels("aws", "gcp", metadata=False)
        # Retried after 1-3 s while the fault lasts: counted again, still the old files.
        vt.advance(RETRY_MAX)
        s.wait_for(lambda: _write_failures(s) > failed, "the write to be retried")
        assert {rel: (s.outdir / rel).read_bytes() for rel in FILES} == before
    finally:
        repair()
    assert any(reason in r.getMessage() and "previous file kept" in r.getMessage()
               for r in caplog.records), f"no {reason} write failure was logged"
    failed = _write_failures(s)
    vt.advance(RETRY_MAX)
    s.wait_for(lambda: _file_digests(s) == new, "the newest credentials to be written")
    assert _write_failures(s) == failed
    assert temp_files(s.outdir) == []


def test_disk_full_keeps_the_previous_files_counts_and_recovers(
        scenario: MakeScenario, small_tmpfs: Path, caplog: pytest.LogCaptureFixture) -> None:
    s = scenario(("aws", "gcp"), virtual=True, directory=small_tmpfs / "creds")
    filler = small_tmpfs / "filler"
    _break_and_recover(s, lambda: fill_until_full(filler), filler.unlink, "disk_full", caplog)


def test_read_only_output_directory_keeps_the_previous_files_and_recovers(
        scenario: MakeScenario, small_tmpfs: Path, caplog: pytest.LogCaptureFixture) -> None:
    s = scenario(("aws", "gcp"), virtual=True, directory=small_tmpfs / "creds")

    def remount(mode: str) -> None:
        subprocess.run(["mount", "-o", f"remount,{mode}", str(small_tmpfs)], check=True)

    _break_and_recover(s, lambda: remount("ro"), lambda: remount("rw"), "read_only", caplog)


def test_disk_full_for_longer_than_the_lifetime_removes_each_file_as_it_expires(
        scenario: MakeScenario, small_tmpfs: Path) -> None:
    """The tmpfs stays full for two hours (credentials last one): every refresh succeeds
    but no file can be rewritten. Each file is removed when its own content expires
    (unlinking needs no space), `outputs_behind` and /readyz say so the whole time, and
    nothing expired is ever read (the checker); freed space brings every file back."""
    s = scenario(("aws", "gcp"), virtual=True, directory=small_tmpfs / "creds")
    s.sweep()
    filler = small_tmpfs / "filler"
    fill_until_full(filler)
    try:
        # New credentials the writer cannot write. A pass still replacing a file when
        # the tmpfs is topped up frees a page after it, which the next new file can take;
        # and a writer that failed a pass sleeps (fake time) before its retry, so a new
        # credential waits for that retry. So: top up, refresh, let the retry run, and go
        # again (bounded) until a pass finds no page at all for aws.
        for _ in range(6):
            fill_until_full(filler)
            s.bridge.refresh_all()
            s.vt.advance(RETRY_MAX)  # past any pending retry; settled when it returns
            if "aws" in s.bridge.daemon.writer.behind:
                break
        # (Google may hand back the token it gave before: then gcp's files are current.)
        s.wait_for(lambda: "aws" in s.bridge.daemon.writer.behind, "aws outputs behind")
        assert s.metric("spiffe_bridge_outputs_behind", target="aws") == 1
        written = {rel: (s.outdir / rel).read_bytes() for rel in FILES}
        for _ in range(3):  # 45 minutes full: refreshes go on, no file can be rewritten
            s.vt.advance(15 * 60)
            assert {t: s.state(t) for t in ("aws", "gcp")} == {"aws": "fresh", "gcp": "fresh"}
            assert "aws" in s.bridge.daemon.writer.behind
            ready, body = readiness(s.bridge.daemon.store.snapshot(), s.mono(),
                                    s.bridge.daemon.writer.behind)
            assert ready is False
            assert body["targets"]["aws"]["outputs_behind"] is True  # type: ignore[index]
            assert body["targets"]["aws"]["state"] == "fresh"  # type: ignore[index]
        s.vt.advance(30 * 60)  # past the one-hour life of what the files held
        # Each file was removed when its content expired (unlinking needs no space); the
        # pages it freed may since have taken a newer credential, never the old one.
        stale = [rel for rel in FILES
                 if (s.outdir / rel).exists() and (s.outdir / rel).read_bytes() == written[rel]]
        assert stale == []
    finally:
        filler.unlink()
    s.vt.advance(LONG_RETRY[1])  # failing for over a minute: retried every 20-30 s
    s.sweep()  # every file carries the store's credential again
    assert s.metric("spiffe_bridge_outputs_behind", target="aws") == 0
    assert s.bridge.daemon.writer.behind == frozenset()
