"""The suite's own promises (tests/conftest.py), run on a small suite of their own: the
closing summary counts skips for a missing tool and names the one install command, and
a test that leaves a directory of ours in /tmp fails the run."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]
CONFTEST = Path(__file__).resolve().parents[1] / "conftest.py"


@pytest.fixture
def suite(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makeconftest(CONFTEST.read_text())
    return pytester


def test_the_summary_counts_missing_tool_skips_and_names_one_command(
        suite: pytest.Pytester) -> None:
    """Two skips naming an installer are counted; a skip for another reason is not."""
    suite.makepyfile(test_tools="""
        import pytest
        def test_a(): pytest.skip("grpcurl not found (install: tests/tools/install-grpcurl.sh)")
        def test_b(): pytest.skip("SPIRE not found (install: bash tests/tools/install-spire.sh)")
        def test_c(): pytest.skip("cannot mount a tmpfs here (needs root)")
        def test_d(): pass
    """)
    result = suite.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, skipped=3)
    result.stdout.fnmatch_lines(
        ["2 tests skipped for a missing tool; install them all with: make tools"])


def test_no_summary_line_without_missing_tools(suite: pytest.Pytester) -> None:
    suite.makepyfile(test_fine="def test_ok(): pass\n")
    result = suite.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    assert "missing tool" not in result.stdout.str()


def test_a_directory_left_in_tmp_fails_the_run(suite: pytest.Pytester, tmp_path: Path) -> None:
    """A test that makes /tmp/sb-… and does not remove it: the run fails naming it."""
    record = tmp_path / "left"
    suite.makepyfile(test_leak=f"""
        import tempfile
        def test_leaks():
            path = tempfile.mkdtemp(prefix="sb-leak-", dir="/tmp")
            open({str(record)!r}, "w").write(path)
    """)
    result = suite.runpytest_subprocess("-p", "no:cacheprovider")
    left = Path(record.read_text())
    try:
        assert result.ret != 0
        result.stdout.fnmatch_lines([f"*tests left 1 of our directories behind: {left}*"])
    finally:
        shutil.rmtree(left, ignore_errors=True)
