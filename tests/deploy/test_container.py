"""deploy/container/Dockerfile, read statically (no Docker engine runs here): a pinned slim
base, wheels built in a builder stage, a final stage without build tools or pip caches that
runs as a numeric non-root user with the contract's ENTRYPOINT/CMD, and a .dockerignore
that lets in exactly what the COPY lines need."""

from __future__ import annotations

import fnmatch
import json
import re
from dataclasses import dataclass, field

import yaml

from tests.support.deploy import CHART, CONTAINER, KUBERNETES, REPO, load_docs, pod_spec

DOCKERFILE = CONTAINER / "Dockerfile"
IGNORE = CONTAINER / "Dockerfile.dockerignore"
BUILD_TOOLS = re.compile(r"\b(gcc|g\+\+|cc|make|build-essential|python3?-dev|apt-get|apk|pip)\b")


@dataclass
class Stage:
    image: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def values(self, keyword: str) -> list[str]:
        return [v for k, v in self.instructions if k == keyword]


def _parse() -> tuple[dict[str, str], list[Stage]]:
    """Global ARG defaults and the stages, with continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, rest = line.partition(" ")
        keyword, rest = keyword.upper(), rest.strip()
        if keyword == "FROM":
            parts = rest.split()
            name = parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else None
            stages.append(Stage(parts[0], name))
        elif not stages and keyword == "ARG":
            key, _, default = rest.partition("=")
            args[key] = default
        else:
            stages[-1].instructions.append((keyword, rest))
    return args, stages


def _base_images() -> list[str]:
    args, stages = _parse()
    names = {s.name for s in stages if s.name}
    images = []
    for s in stages:
        image = re.sub(r"\$\{?(\w+)\}?", lambda m: args[m.group(1)], s.image)
        if image not in names:
            images.append(image)
    return images


def test_base_image_is_a_pinned_slim_python() -> None:
    """A full version tag (no `latest`, no bare `3`): python:3.11-slim-bookworm, or the
    same pinned by digest; the digest route is documented in the file."""
    for image in _base_images():
        assert re.fullmatch(r"python:3\.11(\.\d+)?-slim-bookworm(@sha256:[0-9a-f]{64})?",
                            image), image
    assert "@sha256:" in DOCKERFILE.read_text()


def test_builder_stage_builds_wheels_without_a_cache() -> None:
    _, stages = _parse()
    builder, final = stages[0], stages[-1]
    assert builder.name == "builder"
    assert len(stages) == 2
    runs = " ".join(builder.values("RUN"))
    assert "pip wheel" in runs
    assert "--no-index" in runs  # the venv is installed from the built wheels only
    assert "PIP_NO_CACHE_DIR=1" in " ".join(builder.values("ENV"))
    assert final.name is None


def test_final_stage_has_no_build_tools_and_copies_only_the_venv() -> None:
    _, stages = _parse()
    final = stages[-1]
    assert final.values("RUN") == [], "the runtime stage runs nothing: no tools, no caches"
    copies = final.values("COPY")
    assert copies == ["--from=builder /opt/spiffe-bridge /opt/spiffe-bridge"]
    for keyword, value in final.instructions:
        assert not (keyword in {"RUN", "COPY", "ADD"} and BUILD_TOOLS.search(value)), value
        assert "/wheels" not in value
        assert ".cache/pip" not in value


def test_runs_as_a_numeric_non_root_user_matching_the_manifests() -> None:
    _, stages = _parse()
    (user,) = stages[-1].values("USER")
    match = re.fullmatch(r"(\d+)(?::(\d+))?", user)
    assert match, f"USER {user}: runAsNonRoot can only verify a numeric user"
    uid = int(match.group(1))
    assert uid != 0
    assert match.group(2) is None or int(match.group(2)) != 0
    # The pods run as the same UID by default (files are 0600, owned by this user).
    assert yaml.safe_load((CHART / "values.yaml").read_text())["runAsUser"] == uid
    for name in ("daemonset.yaml", "sidecar-example.yaml"):
        workload = next(d for d in load_docs((KUBERNETES / name).read_text())
                        if d["kind"] in {"DaemonSet", "Deployment"})
        assert pod_spec(workload)["securityContext"]["runAsUser"] == uid


def test_entrypoint_and_cmd_are_the_contract() -> None:
    _, stages = _parse()
    final = stages[-1]
    (entrypoint,) = final.values("ENTRYPOINT")
    (cmd,) = final.values("CMD")
    assert json.loads(entrypoint) == ["spiffe-bridge"]
    assert json.loads(cmd) == ["run", "--config", "/etc/spiffe-bridge/config.yaml"]
    assert any("/opt/spiffe-bridge/bin" in env for env in final.values("ENV"))


def _ignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule, approximately: a pattern matches a path or any of its parents, the
    last matching pattern wins, and `!` re-includes."""
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        p = pattern.removeprefix("!").rstrip("/")
        parts = path.split("/")
        prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
        if any(fnmatch.fnmatchcase(x, p) for x in prefixes) or fnmatch.fnmatchcase(
                path, p.replace("**/", "*")):
            ignored = not negate
    return ignored


def test_dockerignore_admits_exactly_what_the_copies_need() -> None:
    """Each context file a COPY names exists and is let in; the rest of the repository
    (tests, .git, .venv, deploy) stays out of the build context."""
    patterns = [line.strip() for line in IGNORE.read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    _, stages = _parse()
    sources = [src for s in stages for v in s.values("COPY") if not v.startswith("--from")
               for src in v.split()[:-1]]
    assert sources
    for src in sources:
        assert (REPO / src).exists(), src
        assert not _ignored(src, patterns), src
        if (REPO / src).is_dir():
            assert not _ignored(f"{src}/cli.py", patterns)
            assert _ignored(f"{src}/__pycache__/cli.cpython-311.pyc", patterns)
    for outside in ("tests/conftest.py", ".git/HEAD", ".venv/bin/python", "deploy/docs/x.md",
                    "Makefile"):
        assert _ignored(outside, patterns), outside
