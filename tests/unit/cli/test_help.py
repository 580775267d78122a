"""`spiffe-bridge --help` describes the whole tool: both clouds, every way it hands out
credentials, every command, and where a newcomer starts."""

from __future__ import annotations

import pytest

from bridge.cli import main


def test_help_describes_the_whole_tool(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--help"])
    assert exited.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for words in ("JWT-SVIDs", "AWS", "GCP", "files on tmpfs", "credential_process",
                  "gRPC API", "IMDSv2", "GCE metadata", "Prometheus metrics", "health",
                  "spiffe-bridge dev", "spiffe-bridge check --config F"):
        assert words in text, words
    for command in ("run", "once", "check", "credential-process", "status", "dev"):
        assert f" {command} " in text, command


def test_dev_help_names_workdir_and_keep(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["dev", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--workdir" in text
    assert "--keep keep the credentials" in text
