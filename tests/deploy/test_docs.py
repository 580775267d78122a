"""deploy/docs: the files they name exist, the spiffe-bridge commands they show are real
commands with real options, and their JSON and YAML examples parse; the `targets` they
show pass `spiffe-bridge check`, and the trust policy pins the DaemonSet's SPIFFE ID."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from tests.support.deploy import DOCS, REPO
from tests.support.process import bridge_cli

PAGES = sorted(DOCS.glob("*.md"))
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)
COMMAND = re.compile(r"\bspiffe-bridge ([a-z][a-z-]*)((?: --[a-z-]+(?: [^\s\\-][^\s\\]*)?)+)")
DAEMONSET_ID = "spiffe://example.org/ns/spiffe-bridge/sa/spiffe-bridge"


def _blocks(language: str) -> list[tuple[str, str]]:
    return [(page.name, body) for page in PAGES
            for lang, body in FENCE.findall(page.read_text()) if lang == language]


def test_the_three_guides_exist() -> None:
    assert {p.name for p in PAGES} >= {"kubernetes.md", "onprem.md", "cloud-setup.md"}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_named_files_exist(page: Path) -> None:
    text = page.read_text()
    for path in re.findall(r"(?<![\w/])deploy/(?:kubernetes|helm|systemd|container|docs|"
                           r"grafana|prometheus)\b[\w./-]*[\w/]", text):
        assert (REPO / path).exists(), path
    for name in re.findall(r"`([\w-]+\.md)`", text):
        assert (DOCS / name).exists() or (REPO / name).exists(), name


def test_commands_shown_are_real() -> None:
    """`spiffe-bridge <command> --option ...` in the guides: every command and option
    is one the CLI accepts."""
    shown = [(page.name, m.group(1), re.findall(r"--[a-z-]+", m.group(2)))
             for page in PAGES for m in COMMAND.finditer(page.read_text())]
    assert {cmd for _, cmd, _ in shown} >= {"check", "status", "once", "credential-process"}
    helps: dict[str, str] = {}
    for page, cmd, options in shown:
        if cmd not in helps:
            proc = bridge_cli(cmd, "--help")
            assert proc.returncode == 0, f"{page}: spiffe-bridge {cmd}: {proc.stderr}"
            helps[cmd] = proc.stdout
        for option in options:
            assert option in helps[cmd], f"{page}: spiffe-bridge {cmd} has no {option}"


def test_json_examples_parse_and_pin_aud_and_sub() -> None:
    blocks = _blocks("json")
    assert blocks
    policies = [json.loads(body) for _, body in blocks]
    (policy,) = [p for p in policies if "Statement" in p]
    (statement,) = policy["Statement"]
    assert statement["Action"] == "sts:AssumeRoleWithWebIdentity"
    provider = statement["Principal"]["Federated"].split(":oidc-provider/")[1]
    conditions = statement["Condition"]["StringEquals"]
    assert conditions[f"{provider}:aud"] == "sts.amazonaws.com"
    assert conditions[f"{provider}:sub"] == DAEMONSET_ID


def test_yaml_targets_pass_check(tmp_path: Path) -> None:
    """Each YAML example with a `targets` list is a valid list of bridge targets."""
    checked = 0
    for page, body in _blocks("yaml"):
        doc = yaml.safe_load(body)
        if not isinstance(doc, dict) or "targets" not in doc:
            continue
        config = {"workload_api": {"socket": "unix:///run/spire/agent-sockets/api.sock"},
                  "outputs": {"directory": "/run/spiffe-bridge/creds"},
                  "targets": doc["targets"]}
        path = tmp_path / f"{checked}.yaml"
        path.write_text(yaml.safe_dump(config))
        proc = bridge_cli("check", "--config", str(path))
        assert proc.returncode == 0, f"{page}: {proc.stderr}"
        checked += 1
    assert checked >= 3
