"""The generated protobuf/gRPC modules are exactly what `make proto` makes from proto/:
nobody edited them by hand, and nobody changed a .proto without regenerating."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROTOS = {
    "spiffe/workload.proto": ("--python_out", "--pyi_out"),
    "spiffebridge/v1/credentials.proto": ("--python_out", "--pyi_out", "--grpc_python_out"),
}


@pytest.mark.parametrize("proto", sorted(PROTOS))
def test_generated_modules_match_the_proto_sources(proto: str, tmp_path: Path) -> None:
    outs = [f"{flag}={tmp_path}" for flag in PROTOS[proto]]
    subprocess.run([sys.executable, "-m", "grpc_tools.protoc", "-Ibridge/_proto=proto", *outs,
                    f"proto/{proto}"], cwd=ROOT, check=True, capture_output=True)
    generated = sorted(p for p in tmp_path.rglob("*") if p.is_file())
    assert generated, "protoc wrote nothing"
    for path in generated:
        committed = ROOT / path.relative_to(tmp_path)
        assert committed.exists(), f"{committed} is missing: run `make proto`"
        assert committed.read_bytes() == path.read_bytes(), (
            f"{committed.relative_to(ROOT)} differs from what protoc makes: run `make proto`")
