"""The README's configuration example is a config `check` accepts, so the front door
never documents keys or combinations the loader refuses."""

from __future__ import annotations

import re
from pathlib import Path

from bridge.config import parse_config

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_configuration_example_loads() -> None:
    text = README.read_text()
    section = text[text.index("### Configuration"):]
    block = re.search(r"```yaml\n(.*?)```", section, re.S)
    assert block is not None
    config = parse_config(block.group(1), env={})
    names = [t.name for t in config.targets]
    assert names == ["etl-s3", "bq-writer", "aws-to-gcp", "gcp-to-aws"]
    assert config.metadata.get("container") is not None
    assert config.targets[0].allowed_callers
