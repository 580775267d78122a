"""GCP outputs: token files and JSON that google-auth itself loads."""

from __future__ import annotations

import json
import secrets
import shutil
import stat
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import google.oauth2.credentials
import pytest
from google.auth import identity_pool

from bridge.app.daemon import credential_directory
from bridge.clouds.gcp import GcpHopConfig, GcpToken
from bridge.config import OutputsConfig, TargetConfig
from bridge.model import Credential, State, TargetStatus
from tests.support.values import svid, tmpfs_dir

PROVIDER = ("//iam.googleapis.com/projects/123456/locations/global/workloadIdentityPools/"
            "spire/providers/spire")


@pytest.fixture
def outdir() -> Iterator[Path]:
    d = tmpfs_dir()
    yield d / "out"
    shutil.rmtree(d, ignore_errors=True)


def _target(*, sa: str | None = "w@p.iam.gserviceaccount.com", external: bool = False
            ) -> TargetConfig:
    return TargetConfig(name="bq", audience=PROVIDER, jwt_file=external,
                        hops=(GcpHopConfig(workload_identity_provider=PROVIDER,
                                           service_account=sa,
                                           external_account_file=external),))


def _status(now: float, lifetime: float = 3600) -> TargetStatus:
    token = GcpToken(access_token="ya29." + secrets.token_urlsafe(60), expires_at=now + lifetime,
                     principal="w@p.iam.gserviceaccount.com")
    cred = Credential(target="bq", issued_at=now, expires_at=now + lifetime,
                      svid_expires_at=now + 300, material=token, deadline=now + lifetime,
                      received=now)
    return TargetStatus(name="bq", state=State.FRESH, credential=cred, delivered=True,
                        svid=svid(now=now))


def test_token_file_is_the_raw_token_without_newline(outdir: Path) -> None:
    """gcp/<t>.token holds exactly the access token, 0600."""
    now = time.time()
    d = credential_directory(OutputsConfig(outdir), [_target()])
    d.prepare()
    status = _status(now)
    assert d.apply({"bq": status}, now) == []
    token_file = outdir / "gcp" / "bq.token"
    assert status.credential is not None
    assert isinstance(status.credential.material, GcpToken)
    assert token_file.read_bytes() == status.credential.material.access_token.encode()
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert not (outdir / "aws" / "credentials").exists()


def _written_json(outdir: Path) -> tuple[dict[str, Any], TargetStatus]:
    """gcp/bq.json as the directory writes it for a fresh status, and that status."""
    now = time.time()
    d = credential_directory(OutputsConfig(outdir), [_target()])
    d.prepare()
    status = _status(now)
    d.apply({"bq": status}, now)
    return json.loads((outdir / "gcp" / "bq.json").read_text()), status


def test_google_auth_builds_working_credentials_from_the_json(outdir: Path) -> None:
    """google.oauth2.credentials.Credentials from gcp/<t>.json carries the token and expiry."""
    doc, status = _written_json(outdir)
    expiry = datetime.strptime(doc["expiry"], "%Y-%m-%dT%H:%M:%SZ")  # google-auth's format
    creds = google.oauth2.credentials.Credentials(token=doc["token"], expiry=expiry)
    assert creds.valid
    assert status.credential is not None
    assert isinstance(status.credential.material, GcpToken)
    assert creds.token == status.credential.material.access_token
    assert doc["token_type"] == "Bearer"
    headers: dict[str, str] = {}
    creds.apply(headers)
    assert headers["authorization"] == f"Bearer {creds.token}"


def test_the_json_is_also_an_oauth2_token(outdir: Path) -> None:
    """Beside the documented keys, `access_token`, `token_type` and an RFC 3339 UTC
    `expiry`: the JSON of Go's oauth2.Token and of OAuth2 token responses (the Go and
    Node consumer tests load it so); google-auth takes the same fields."""
    doc, status = _written_json(outdir)
    assert status.credential is not None
    assert isinstance(status.credential.material, GcpToken)
    assert set(doc) == {"token", "access_token", "token_type", "expiry", "principal"}
    assert doc["access_token"] == doc["token"] == status.credential.material.access_token
    assert doc["token_type"] == "Bearer"
    expiry = datetime.fromisoformat(doc["expiry"])
    assert doc["expiry"].endswith("Z")
    assert expiry.utcoffset() == timedelta(0)
    assert expiry.timestamp() == int(status.credential.expires_at)
    creds = google.oauth2.credentials.Credentials(token=doc["access_token"],
                                                  expiry=expiry.replace(tzinfo=None))
    assert creds.valid
    assert not creds.expired


def test_expired_gcp_token_is_removed(outdir: Path) -> None:
    """Past expiry both GCP files disappear."""
    now = time.time()
    d = credential_directory(OutputsConfig(outdir), [_target()])
    d.prepare()
    d.apply({"bq": _status(now, lifetime=60)}, now)
    d.apply({"bq": _status(now, lifetime=60)}, now + 61)
    assert not (outdir / "gcp" / "bq.token").exists()
    assert not (outdir / "gcp" / "bq.json").exists()


@pytest.mark.parametrize("sa", ["w@p.iam.gserviceaccount.com", None], ids=["impersonate",
                                                                           "direct"])
def test_external_account_config_loads_in_google_auth(outdir: Path, sa: str | None) -> None:
    """The opt-in external_account JSON is what google.auth loads as identity-pool creds."""
    now = time.time()
    d = credential_directory(OutputsConfig(outdir), [_target(sa=sa, external=True)])
    d.prepare()
    d.apply({"bq": _status(now)}, now)
    path = outdir / "gcp" / "bq.external_account.json"
    doc = json.loads(path.read_text())
    # from_info parses exactly what load_credentials_from_file would, minus its
    # project-id lookup over the network.
    creds = identity_pool.Credentials.from_info(doc)
    assert creds.info["credential_source"] == doc["credential_source"]
    assert doc["credential_source"]["file"] == str(outdir / "jwt" / "bq.jwt")
    assert (outdir / "jwt" / "bq.jwt").exists()
    assert ("service_account_impersonation_url" in doc) is (sa is not None)
