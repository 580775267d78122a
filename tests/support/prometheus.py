"""Shared helpers for the observability tests: paths, tools, PromQL text, a Prometheus."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, TypeVar

import yaml

from tests.support.require import unavailable
from tests.support.wait import wait_for

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "deploy" / "grafana" / "spiffe-bridge.json"
ALERTS = REPO / "deploy" / "prometheus" / "alerts.yaml"
PROMTOOL_TESTS = REPO / "deploy" / "prometheus" / "promtool-tests.yaml"
RUNBOOK = REPO / "deploy" / "prometheus" / "RUNBOOK.md"
JOB = "spiffe-bridge"

T = TypeVar("T")


def require_tool(name: str) -> str:
    """The tool's path; skip without it, but fail under CI=true (README's rule)."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} not found on PATH (install: tests/tools/install-prometheus.sh)"
        unavailable(message)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_json(url: str, timeout: float = 5.0) -> tuple[int, Any]:
    """GET a JSON document; error statuses (503 from /readyz) are answers, not errors."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:  # loopback only
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


# -- dashboard and rules as data ---------------------------------------------------------


def load_dashboard() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return doc


def dashboard_panels(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel, including those nested in collapsed rows."""
    out: list[dict[str, Any]] = []
    for p in doc.get("panels", []):
        out.append(p)
        out.extend(p.get("panels", []))
    return out


def dashboard_exprs(doc: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title/refId, PromQL) for every query target of every panel."""
    return [(f"{p['title']}/{t.get('refId', '?')}", t["expr"])
            for p in dashboard_panels(doc) for t in p.get("targets", []) if "expr" in t]


def load_rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(ALERTS.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def alert_rules() -> list[dict[str, Any]]:
    return [r for r in load_rules() if "alert" in r]


def substitute(expr: str, target: str) -> str:
    """Replace Grafana's variables as Grafana would for one value of `$target`."""
    out = (expr.replace("${target}", target).replace("$target", target)
           .replace("${__rate_interval}", "1m").replace("$__rate_interval", "1m"))
    assert "$" not in out, f"unhandled Grafana variable in {expr!r}"
    return out


_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENT = re.compile(r"(?<![\w.:])([A-Za-z_:][A-Za-z0-9_:]*)(?![\w:]|\s*\()")
_KEYWORDS = frozenset({"and", "or", "unless", "bool", "offset", "by", "without", "on",
                       "ignoring", "group_left", "group_right", "inf", "nan", "atan2"})


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (not functions, labels or keywords)."""
    text = _STRINGS.sub('""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = _GROUPING.sub(" ", text)
    return {m for m in _IDENT.findall(text) if m.lower() not in _KEYWORDS}


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading."""
    slug = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return slug.replace(" ", "-")


# -- a real Prometheus -------------------------------------------------------------------


class Prometheus:
    """Debian's prometheus on 127.0.0.1, scraping the given targets every second."""

    def __init__(self, workdir: Path, scrape_targets: list[str], rule_files: list[Path]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._workdir = workdir
        config = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s",
                       "evaluation_interval": "1s"},
            "rule_files": [str(p) for p in rule_files],
            "scrape_configs": [{"job_name": JOB,
                                "static_configs": [{"targets": scrape_targets}]}],
        }
        self.config_path = workdir / "prometheus.yml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.log_path = workdir / "prometheus.log"
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self, binary: str) -> None:
        with self.log_path.open("wb") as log:
            self._proc = subprocess.Popen(
                [binary, f"--config.file={self.config_path}",
                 f"--storage.tsdb.path={self._workdir / 'data'}",
                 f"--web.listen-address=127.0.0.1:{self.port}",
                 "--storage.tsdb.retention.time=1h", "--log.level=warn"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        wait_for(self._ready, f"prometheus ready on {self.url}; log: {self.log_path}",
                 timeout=30, interval=0.25)

    def _ready(self) -> bool:
        assert self._proc is not None
        if self._proc.poll() is not None:
            raise AssertionError(f"prometheus exited {self._proc.returncode}: "
                                 f"{self.log_path.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)

    def api(self, path: str, **params: str) -> Any:
        """GET /api/v1/<path>; asserts status success and returns `data`."""
        query = urllib.parse.urlencode(params)
        status, body = http_json(f"{self.url}/api/v1/{path}?{query}")
        assert status == 200, (path, params, body)
        assert body.get("status") == "success", (path, params, body)
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """Instant query; the result vector (a scalar result becomes one sample)."""
        data = self.api("query", query=expr)
        if data["resultType"] == "vector":
            result: list[dict[str, Any]] = data["result"]
            return result
        return [{"metric": {}, "value": data["result"]}]

    def has_series(self, name: str) -> bool:
        return bool(self.query(f'count({{__name__="{name}"}})'))

    def metadata(self, name: str) -> list[dict[str, Any]]:
        """What the scrapes said about `name` (# TYPE / # HELP), even with no samples."""
        data: list[dict[str, Any]] = self.api("targets/metadata", metric=name,
                                              match_target=f'{{job="{JOB}"}}')
        return data

