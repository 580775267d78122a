"""`spiffe-bridge check`: exit 0 and OK for a valid file, exit 2 naming every bad key."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bridge.cli import main
from tests.support.configs import MALFORMED, Bad, render


@pytest.fixture(autouse=True)
def _no_env_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    """The files under test set their own socket; the host's env must not leak in."""
    monkeypatch.delenv("SPIFFE_ENDPOINT_SOCKET", raising=False)


def _check(path: Path) -> int:
    return main(["check", "--config", str(path)])


def test_check_accepts_a_valid_file_and_prints_ok(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """A valid file exits 0, says OK on stdout and lists its targets; stderr stays empty."""
    path = tmp_path / "bridge.yaml"
    path.write_text(render(), encoding="utf-8")
    assert _check(path) == 0
    out, err = capsys.readouterr()
    assert "OK" in out
    assert "etl-s3" in out
    assert "audit" in out
    assert err == ""


@pytest.mark.parametrize("case", MALFORMED, ids=[c.id for c in MALFORMED])
def test_check_rejects_a_malformed_file_naming_the_key_path(
        case: Bad, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Each malformed file exits 2 with `path: message` on stderr and no traceback."""
    path = tmp_path / "bridge.yaml"
    path.write_text(case.render(), encoding="utf-8")
    assert _check(path) == 2
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    if case.path:
        assert f"{case.path}: " in err
    assert re.search(case.says, err, re.IGNORECASE), err


def test_check_lists_every_problem_with_a_count(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    """Several mistakes come back together, one line each, after a count."""
    path = tmp_path / "bridge.yaml"
    path.write_text(render(((("bogus",), 1), (("refresh", "concurrency"), 0),
                            (("outputs", "directory"), "rel"))), encoding="utf-8")
    assert _check(path) == 2
    err = capsys.readouterr().err
    assert "3 problems" in err
    for key in ("bogus: ", "refresh.concurrency: ", "outputs.directory: "):
        assert key in err


def test_check_of_a_missing_file_exits_2_with_a_clear_message(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A file that does not exist is a usage error that names the file and the reason."""
    path = tmp_path / "nope.yaml"
    assert _check(path) == 2
    err = capsys.readouterr().err
    assert str(path) in err
    assert re.search(r"no such file|not found|cannot read", err, re.IGNORECASE)
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("name", "content"),
    [("dir", None), ("latin1.yaml", "outputs:\n  directory: /run/caf\xe9\n".encode("latin-1"))],
    ids=["directory", "not-utf8"],
)
def test_check_of_an_unreadable_file_exits_2(name: str, content: bytes | None, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    """A directory or a non-UTF-8 file is reported in one line, not a traceback."""
    path = tmp_path / name
    if content is None:
        path.mkdir()
    else:
        path.write_bytes(content)
    assert _check(path) == 2
    err = capsys.readouterr().err
    assert str(path) in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    "argv",
    [
        ["check", "--config", "CONFIG", "--bogus"],
        ["check", "--config", "CONFIG", "--log-level", "TRACE"],
        ["check"],
        ["frobnicate"],
        [],
        ["--no-such-flag", "check", "--config", "CONFIG"],
    ],
    ids=["unknown-flag", "bad-choice", "missing-config", "unknown-command", "no-command",
         "unknown-global-flag"],
)
def test_usage_errors_exit_2(argv: list[str], tmp_path: Path,
                             capsys: pytest.CaptureFixture[str]) -> None:
    """argparse usage errors exit with code 2 and a usage line on stderr."""
    path = tmp_path / "bridge.yaml"
    path.write_text(render(), encoding="utf-8")
    with pytest.raises(SystemExit) as info:
        main([str(path) if a == "CONFIG" else a for a in argv])
    assert info.value.code == 2
    assert "usage:" in capsys.readouterr().err
