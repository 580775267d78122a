"""The credential directory: atomic private files, refusal of unsafe paths, expiry removal."""

from __future__ import annotations

import configparser
import json
import os
import shutil
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge.app.daemon import credential_directory
from bridge.clouds.aws import AwsHopConfig
from bridge.clouds.aws.files import read_process_json
from bridge.config import OutputsConfig, TargetConfig
from bridge.errors import OutputError
from bridge.model import State, TargetStatus
from bridge.outputs import CredentialDirectory, atomic
from tests.support.values import fill_until_full, fresh_status, svid, tmpfs_dir


@pytest.fixture
def outdir() -> Iterator[Path]:
    d = tmpfs_dir()
    yield d / "out"
    shutil.rmtree(d, ignore_errors=True)


def _directory(path: Path, *, jwt: tuple[str, ...] = (), aws: tuple[str, ...] = ("a", "b"),
               allow_non_tmpfs: bool = False) -> CredentialDirectory:
    role = AwsHopConfig(role_arn="arn:aws:iam::111122223333:role/r", region="us-east-1")
    targets = [TargetConfig(name=n, audience="sts.amazonaws.com", hops=(role,),
                            jwt_file=n in jwt) for n in sorted(set(aws) | set(jwt))]
    return credential_directory(OutputsConfig(path, allow_non_tmpfs=allow_non_tmpfs), targets)


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.lstat().st_mode)


def test_files_are_0600_in_0700_directories_even_with_a_loose_umask(outdir: Path) -> None:
    """Modes come from fchmod, not the umask, and directories are re-tightened on write."""
    now = time.time()
    old = os.umask(0o000)
    try:
        d = _directory(outdir, jwt=("a",))
        d.prepare()
        os.chmod(outdir / "aws", 0o755)
        status = fresh_status("a", now=now)
        status = TargetStatus(**{**{f: getattr(status, f) for f in status.__slots__},
                                 "svid": svid(now=now)})
        assert d.apply({"a": status}, now) == []
    finally:
        os.umask(old)
    assert _mode(outdir) == 0o700
    assert _mode(outdir / "aws") == 0o700
    assert _mode(outdir / "jwt") == 0o700
    for f in ("aws/credentials", "aws/a.json", "jwt/a.jwt"):
        assert _mode(outdir / f) == 0o600, f


def test_contents_match_the_sdk_formats(outdir: Path) -> None:
    """INI profile per target, credential_process JSON with Version 1, JWT without newline."""
    now = time.time()
    a, b = fresh_status("a", now=now), fresh_status("b", now=now, lifetime=7200)
    s = svid(now=now)
    a_with_svid = TargetStatus(**{**{f: getattr(a, f) for f in a.__slots__}, "svid": s})
    d = _directory(outdir, jwt=("a",))
    d.prepare()
    assert d.apply({"a": a_with_svid, "b": b}, now) == []
    ini = configparser.ConfigParser()
    ini.read(outdir / "aws" / "credentials")
    assert sorted(ini.sections()) == ["a", "b"]
    assert a.credential is not None
    assert ini["a"]["aws_secret_access_key"] == a.credential.material.secret_access_key
    doc = json.loads((outdir / "aws" / "a.json").read_text())
    assert doc["Version"] == 1
    assert doc["SessionToken"] == a.credential.material.session_token
    assert doc["Expiration"].endswith("Z")
    assert (outdir / "jwt" / "a.jwt").read_bytes() == s.token.encode()
    assert read_process_json(outdir, "a") == doc


def test_expired_credentials_are_removed_from_every_file(outdir: Path) -> None:
    """A credential past its expiry disappears: its JSON is deleted, its profile dropped."""
    now = time.time()
    d = _directory(outdir)
    d.prepare()
    statuses = {"a": fresh_status("a", now=now, lifetime=60), "b": fresh_status("b", now=now)}
    assert d.apply(statuses, now) == []
    assert (outdir / "aws" / "a.json").exists()
    assert d.apply(statuses, now + 61) == []
    assert not (outdir / "aws" / "a.json").exists()
    ini = configparser.ConfigParser()
    ini.read(outdir / "aws" / "credentials")
    assert ini.sections() == ["b"]


def test_symlink_planted_at_an_output_path_is_refused(outdir: Path, tmp_path: Path) -> None:
    """A symlink at aws/a.json is neither followed nor replaced; its target stays intact."""
    now = time.time()
    d = _directory(outdir)
    d.prepare()
    victim = tmp_path / "victim"
    victim.write_text("precious")
    (outdir / "aws" / "a.json").symlink_to(victim)
    failures = d.apply({"a": fresh_status("a", now=now)}, now)
    assert [f.output for f in failures] == ["aws_process"]
    assert failures[0].error.reason == "symlink"
    assert victim.read_text() == "precious"
    assert (outdir / "aws" / "a.json").is_symlink()
    # the other outputs were still written
    assert (outdir / "aws" / "credentials").is_file()


def test_symlinked_subdirectory_is_refused(outdir: Path, tmp_path: Path) -> None:
    """aws/ replaced by a symlink to elsewhere: nothing is written through it."""
    now = time.time()
    d = _directory(outdir)
    d.prepare()
    shutil.rmtree(outdir / "aws")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (outdir / "aws").symlink_to(elsewhere)
    failures = d.apply({"a": fresh_status("a", now=now)}, now)
    assert failures
    assert failures[0].error.reason == "symlink"
    assert list(elsewhere.iterdir()) == []


def test_symlinked_output_directory_is_refused(tmp_path: Path) -> None:
    """The configured directory itself may not be a symlink."""
    real = tmpfs_dir()
    try:
        link = tmp_path / "link"
        link.symlink_to(real)
        with pytest.raises(OutputError, match="symlink"):
            _directory(link).prepare()
    finally:
        shutil.rmtree(real, ignore_errors=True)


def test_non_tmpfs_directory_is_refused_without_the_opt_out(tmp_path: Path) -> None:
    """Credentials must not reach a disk unless the operator opts out explicitly."""
    disk = Path("/var/tmp") / f"sb-{os.getpid()}-{time.monotonic_ns()}"
    assert atomic.filesystem_type(Path("/var/tmp")) not in {"tmpfs", "ramfs"}
    try:
        with pytest.raises(OutputError, match="tmpfs") as err:
            _directory(disk).prepare()
        assert err.value.reason == "not_tmpfs"
        _directory(disk, allow_non_tmpfs=True).prepare()
        assert _mode(disk) == 0o700
    finally:
        shutil.rmtree(disk, ignore_errors=True)


def test_stale_temp_files_are_swept_at_start(outdir: Path) -> None:
    """Temp files left by a killed writer hold secrets: prepare() deletes them."""
    d = _directory(outdir)
    d.prepare()
    leftovers = [outdir / "aws" / f".a.json{atomic.TEMP_MARK}deadbeef",
                 outdir / f".x{atomic.TEMP_MARK}0011"]
    for p in leftovers:
        p.write_text("secret")
    keep = outdir / "aws" / "credentials"
    keep.write_text("")
    assert d.prepare() == 2
    assert not any(p.exists() for p in leftovers)
    assert keep.exists()


def test_a_full_disk_keeps_the_previous_file_and_leaves_no_temp(small_tmpfs: Path) -> None:
    """ENOSPC: the write fails cleanly and is counted, the old file is intact, no temp leaks."""
    now = time.time()
    out = small_tmpfs / "out"
    d = _directory(out, aws=("a",))
    d.prepare()
    assert d.apply({"a": fresh_status("a", now=now)}, now) == []
    before = (out / "aws" / "a.json").read_bytes()
    fill_until_full(small_tmpfs / "filler")
    failures = d.apply({"a": fresh_status("a", now=now + 1)}, now + 1)
    assert failures
    assert {f.error.reason for f in failures} == {"disk_full"}
    assert (out / "aws" / "a.json").read_bytes() == before
    json.loads(before)
    assert not [p for p in (out / "aws").iterdir() if atomic.TEMP_MARK in p.name]
    (small_tmpfs / "filler").unlink()
    assert d.apply({"a": fresh_status("a", now=now + 2)}, now + 2) == []
    assert (out / "aws" / "a.json").read_bytes() != before


def test_a_read_only_directory_keeps_the_previous_file(small_tmpfs: Path) -> None:
    """EROFS: every output reports read_only and the previous files stay readable."""
    now = time.time()
    out = small_tmpfs / "out"
    d = _directory(out, aws=("a",))
    d.prepare()
    assert d.apply({"a": fresh_status("a", now=now)}, now) == []
    before = (out / "aws" / "a.json").read_bytes()
    subprocess.run(["mount", "-o", "remount,ro", str(small_tmpfs)], check=True)
    try:
        failures = d.apply({"a": fresh_status("a", now=now + 1)}, now + 1)
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(small_tmpfs)], check=True)
    assert failures
    assert {f.error.reason for f in failures} == {"read_only"}
    assert (out / "aws" / "a.json").read_bytes() == before


def test_credentials_file_appears_only_with_a_valid_profile(outdir: Path) -> None:
    """Before the first credential there is no aws/credentials, so its existence means ready."""
    now = time.time()
    d = _directory(outdir, aws=("a",))
    d.prepare()
    assert d.apply({"a": TargetStatus(name="a")}, now) == []
    assert not (outdir / "aws" / "credentials").exists()
    assert d.apply({"a": fresh_status("a", now=now)}, now) == []
    assert (outdir / "aws" / "credentials").exists()


def test_unchanged_credentials_are_not_rewritten(outdir: Path) -> None:
    """A second apply with the same snapshot leaves the files' inodes alone."""
    now = time.time()
    d = _directory(outdir, aws=("a",))
    d.prepare()
    statuses = {"a": fresh_status("a", now=now)}
    d.apply(statuses, now)
    inode = (outdir / "aws" / "a.json").stat().st_ino
    d.apply(statuses, now + 1)
    assert (outdir / "aws" / "a.json").stat().st_ino == inode


def test_missing_credentials_file_reads_as_a_clear_error(outdir: Path) -> None:
    """credential-process without a daemon gets an error naming the target, not a traceback."""
    _directory(outdir).prepare()
    with pytest.raises(OutputError, match="'nope'"):
        read_process_json(outdir, "nope")


def test_state_enum_values_are_the_metric_contract() -> None:
    """fresh|stale|expired are the label values DESIGN.md promises."""
    assert [s.value for s in State] == ["fresh", "stale", "expired"]
