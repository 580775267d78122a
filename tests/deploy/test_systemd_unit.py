"""deploy/systemd: `systemd-analyze verify` accepts the unit without a warning, its
hardening scores as `systemd-analyze security` OK, and the unit, the example config and the
environment file agree (paths, user, options)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import yaml

from tests.support.deploy import SYSTEMD, run, systemd_analyze
from tests.support.process import bridge_cli

UNIT = SYSTEMD / "spiffe-bridge.service"
BINARY = "/usr/local/bin/spiffe-bridge"
MAX_EXPOSURE = 2.0  # systemd-analyze security: 0 is fully locked down, 10 is unprotected


def _directives(text: str) -> dict[str, list[str]]:
    """`Section.Key` -> values in order (keys may repeat)."""
    out: dict[str, list[str]] = {}
    section = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        out.setdefault(f"{section}.{key.strip()}", []).append(value.strip())
    return out


def _testable_unit(tmp_path: Path, text: str | None = None) -> Path:
    """The unit with ExecStart pointing at a stub executable in tmp_path (verify checks
    that the binary exists); nothing else changes."""
    stub = tmp_path / "spiffe-bridge"
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(0o755)
    original = UNIT.read_text() if text is None else text
    changed = original.replace(f"ExecStart={BINARY} ", f"ExecStart={stub} ")
    assert changed.count(str(stub)) == 1
    assert changed.replace(str(stub), BINARY) == original
    unit = tmp_path / "spiffe-bridge.service"
    unit.write_text(changed)
    return unit


def test_systemd_analyze_verify_is_clean(tmp_path: Path) -> None:
    """Exit 0 and nothing on stderr: unknown keys and bad values are only warnings."""
    proc = run([systemd_analyze(), "verify", str(_testable_unit(tmp_path))])
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip() == ""


def test_systemd_analyze_verify_reports_a_typo(tmp_path: Path) -> None:
    """The check above can fail: a misspelt directive shows up on stderr."""
    text = UNIT.read_text().replace("ProtectSystem=strict", "ProtectSytem=strict")
    proc = run([systemd_analyze(), "verify", str(_testable_unit(tmp_path, text))])
    assert "ProtectSytem" in proc.stderr


def test_security_exposure_is_low(tmp_path: Path) -> None:
    proc = run([systemd_analyze(), "security", "--offline=true", "--no-pager",
                str(_testable_unit(tmp_path))])
    assert proc.returncode == 0, proc.stderr
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", proc.stdout)
    assert match, proc.stdout[-2000:]
    assert float(match.group(1)) <= MAX_EXPOSURE, proc.stdout


def test_unit_sets_the_required_hardening() -> None:
    d = _directives(UNIT.read_text())
    exec_start = shlex.split(d["Service.ExecStart"][0])
    assert exec_start[:4] == [BINARY, "run", "--config", "/etc/spiffe-bridge/config.yaml"]
    assert d["Service.ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert d["Service.Restart"] == ["on-failure"]
    assert d["Service.RestartSec"]
    assert d["Service.RuntimeDirectory"] == ["spiffe-bridge"]
    expected = {"ProtectSystem": "strict", "ProtectHome": "yes", "NoNewPrivileges": "yes",
                "PrivateTmp": "yes", "CapabilityBoundingSet": "",
                "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6"}
    for key, value in expected.items():
        assert d[f"Service.{key}"] == [value], key
    assert d["Service.SystemCallFilter"][0] == "@system-service"
    user = d.get("Service.User", ["root"])[0]
    assert user not in {"root", "0"} or d.get("Service.DynamicUser") == ["yes"]


def test_example_config_fits_the_unit() -> None:
    """Credentials inside the RuntimeDirectory (tmpfs /run), the agent socket outside /tmp
    (PrivateTmp would hide it), and `check` accepts the file."""
    d = _directives(UNIT.read_text())
    config = yaml.safe_load((SYSTEMD / "config.yaml").read_text())
    runtime = f"/run/{d['Service.RuntimeDirectory'][0]}/"
    assert config["outputs"]["directory"].startswith(runtime)
    assert config["grpc"]["socket"].startswith(f"unix://{runtime}")
    socket = config["workload_api"]["socket"].removeprefix("unix://")
    assert not socket.startswith(("/tmp/", "/var/tmp/", "/home/", "/root/"))


def test_env_file_options_are_accepted_by_the_cli() -> None:
    """Every line is a comment or VAR=value, and SPIFFE_BRIDGE_OPTS parses (the same
    --log-* options `check` takes as `run` does)."""
    env: dict[str, str] = {}
    for line in (SYSTEMD / "spiffe-bridge.env").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, sep, value = line.partition("=")
            assert sep, line
            assert re.fullmatch(r"[A-Z_][A-Z0-9_]*", key), line
            env[key] = value
    assert "$SPIFFE_BRIDGE_OPTS" in _directives(UNIT.read_text())["Service.ExecStart"][0]
    proc = bridge_cli("check", "--config", str(SYSTEMD / "config.yaml"),
                      *env["SPIFFE_BRIDGE_OPTS"].split())
    assert proc.returncode == 0, proc.stderr



def test_the_socket_unit_verifies_with_the_service_and_listens_where_the_config_serves(
        tmp_path: Path) -> None:
    """deploy/systemd/spiffe-bridge.socket (socket activation, issue 13 item 3): clean
    `systemd-analyze verify` beside the service, and its one active ListenStream is the
    example config's `http.address` (the daemon adopts a passed socket by address)."""
    unit = _testable_unit(tmp_path)
    socket_unit = tmp_path / "spiffe-bridge.socket"
    socket_unit.write_text((SYSTEMD / "spiffe-bridge.socket").read_text())
    proc = run([systemd_analyze(), "verify", str(socket_unit), str(unit)])
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip() == ""
    listen = _directives(socket_unit.read_text())["Socket.ListenStream"]
    config = yaml.safe_load((SYSTEMD / "config.yaml").read_text())
    assert listen == [config["http"]["address"]]
