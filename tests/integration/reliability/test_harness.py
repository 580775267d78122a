"""The never-expired checker is not vacuous: it reports an expired credential still in a
file, one served with a later expiry than the real one, one no emulator issued, torn
files, and (on virtual time) a file outliving its expiry by more than the grace."""

from __future__ import annotations

import json
import re
import time
from datetime import UTC, datetime
from pathlib import Path

import yaml

from bridge.config import load_config
from bridge.devstack.aws import IssuedCredentials
from bridge.model import utc_iso
from tests.support.expiry import FILE_GRACE, ExpiryChecker, Issued, VirtualTime

KEY = "ASIA" + "A" * 16
OTHER = "ASIA" + "B" * 16
TOKEN = "ya29.dev-" + "t" * 40


class Records(Issued):
    """Emulator records given outright."""

    def __init__(self, aws: dict[str, IssuedCredentials], gcp: dict[str, float]) -> None:
        super().__init__()
        self._records, self._tokens = aws, gcp

    def aws(self, access_key_id: str) -> IssuedCredentials | None:
        return self._records.get(access_key_id)

    def gcp_expiry(self, token: str) -> float | None:
        return self._tokens.get(token)


def _issued(key: str, expires: float) -> IssuedCredentials:
    return IssuedCredentials(access_key_id=key, secret_access_key="s" * 40,
                             session_token="t" * 100,
                             expiration=datetime.fromtimestamp(int(expires), UTC),
                             role_arn="arn:aws:iam::111122223333:role/demo", assumed_role_arn="",
                             session_name="x", subject="spiffe://example.org/demo")


def _config(short_dir: Path, outdir: Path) -> Path:
    doc = {
        "workload_api": {"socket": f"unix://{short_dir}/agent.sock"},
        "outputs": {"directory": str(outdir)},
        "grpc": {"socket": f"unix://{short_dir}/bridge.sock"},
        "targets": [
            {"name": "aws", "aws": {"role_arn": "arn:aws:iam::111122223333:role/demo",
                                    "region": "us-east-1"}},
            {"name": "aws2", "aws": {"role_arn": "arn:aws:iam::111122223333:role/demo",
                                     "region": "us-east-1"}},
            {"name": "gcp", "gcp": {"workload_identity_provider": (
                "//iam.googleapis.com/projects/123456/locations/global/workloadIdentityPools/"
                "spire/providers/spire")}},
        ],
    }
    path = short_dir / "bridge.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def _process_json(key: str, expires: float) -> str:
    return json.dumps({"Version": 1, "AccessKeyId": key, "SecretAccessKey": "s" * 40,
                       "SessionToken": "t" * 100, "Expiration": utc_iso(expires)})


def test_the_checker_reports_expired_later_unknown_and_torn_outputs(
        short_dir: Path, outdir: Path) -> None:
    now = time.time()
    (outdir / "aws").mkdir(parents=True)
    (outdir / "gcp").mkdir()
    (outdir / "aws" / "aws.json").write_text(_process_json(KEY, now - 30))  # expired 30 s ago
    (outdir / "aws" / "aws2.json").write_text(_process_json(KEY, now + 600)[:50])  # torn
    (outdir / "aws" / "credentials").write_text(
        f"[aws]\n# expires {utc_iso(now + 600)}\naws_access_key_id = {OTHER}\n"
        f"aws_secret_access_key = {'s' * 40}\naws_session_token = {'t' * 100}\n")
    (outdir / "gcp" / "gcp.json").write_text(json.dumps({
        "token": TOKEN, "token_type": "Bearer", "expiry": utc_iso(now + 3600)}))
    (outdir / "gcp" / "gcp.token").write_text(TOKEN[:20])  # cut short
    records = Records({KEY: _issued(KEY, now - 30)}, {TOKEN: now + 600})
    checker = ExpiryChecker(load_config(_config(short_dir, outdir)), records)
    try:
        sweep = checker.sweep()
    finally:
        checker.stop()
    found = sorted(checker.violations)
    assert len(found) == 5, found
    expired, torn_json, unknown, later, torn = found
    assert re.match(r"file:aws/aws\.json: .* after it expired", expired)
    assert re.match(r"file:aws/aws2\.json: torn or unparseable", torn_json)
    assert re.match(r"file:aws/credentials\[aws\]: .* never issued by an STS", unknown)
    assert re.match(r"file:gcp/gcp\.json: .* after its real expiry", later)
    assert re.match(r"file:gcp/gcp\.token: .* never issued by Google", torn)  # cut short
    assert sweep.outcome("grpc:aws") == "down"  # nothing listens on the socket
    assert checker.reads == 8


def test_on_virtual_time_a_file_may_outlive_its_expiry_only_by_the_grace(
        short_dir: Path, outdir: Path) -> None:
    vt = VirtualTime()
    expires = vt.now() - 10  # virtual time passed it ...
    (outdir / "aws").mkdir(parents=True)
    (outdir / "aws" / "aws.json").write_text(_process_json(KEY, expires))
    checker = ExpiryChecker(load_config(_config(short_dir, outdir)),
                            Records({KEY: _issued(KEY, expires)}, {}), judge=vt)
    try:
        vt.history.append((time.monotonic(), vt.now()))  # ... in the step that just ended
        checker.sweep()
        assert checker.violations == []
        assert len(checker.late_file_lags) == 1
        vt.history.insert(0, (time.monotonic() - FILE_GRACE - 1, vt.now()))  # ... or long ago
        checker.sweep()
    finally:
        checker.stop()
    assert len(checker.violations) == 1
    assert "still in the file" in checker.violations[0]
