"""AWS files in the credential directory (DESIGN.md):

- `aws/<target>.json`: `credential_process` JSON (`Version: 1`, with `Expiration`, so
  SDKs refresh), expiring with the target's whole chain;
- `aws/credentials`: the shared-credentials INI, one `[profile]` per AWS target, named
  after it (no expiry field exists there: the profile is dropped once expired).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from bridge.clouds.aws.material import AwsCredentials
from bridge.errors import OutputError
from bridge.model import Credential, parse_utc_iso, utc_iso
from bridge.outputs.atomic import read_regular
from bridge.outputs.files import SharedFile, TargetFile, recovered

PROCESS_OUTPUT = "aws_process"
CREDENTIALS_OUTPUT = "aws_credentials"
_INI_HEADER = "# Written by spiffe-bridge; rewritten on every refresh. Do not edit.\n"


def process_json(aws: AwsCredentials, expires_at: float) -> dict[str, object]:
    """AWS `credential_process` output (Version 1, with Expiration so SDKs refresh)."""
    return {"Version": 1, "AccessKeyId": aws.access_key_id,
            "SecretAccessKey": aws.secret_access_key, "SessionToken": aws.session_token,
            "Expiration": utc_iso(expires_at)}


def render_process_json(cred: Credential) -> bytes:
    """`aws/<target>.json`: the target's `process_json`, expiring with its whole chain."""
    return json.dumps(process_json(_aws(cred), cred.expires_at), indent=2).encode()


def target_files(name: str) -> list[TargetFile]:
    return [TargetFile(f"aws/{name}.json", PROCESS_OUTPUT, render=render_process_json)]


def credentials_file(targets: Sequence[str]) -> SharedFile:
    return SharedFile("aws/credentials", CREDENTIALS_OUTPUT, frozenset(targets),
                      render=CredentialsIni().render)


class CredentialsIni:
    """The shared-credentials file; each profile is formatted once per credential (a
    refresh burst at 1,000 targets would otherwise re-format every section)."""

    def __init__(self) -> None:
        self._sections: dict[str, tuple[Credential, str]] = {}

    def render(self, creds: Sequence[Credential]) -> bytes:
        return (_INI_HEADER + "".join(self._section(c) for c in creds)).encode()

    def _section(self, cred: Credential) -> str:
        hit = self._sections.get(cred.target)
        if hit is None or hit[0] is not cred:
            hit = self._sections[cred.target] = (cred, ini_section(cred))
        return hit[1]


def ini_section(c: Credential) -> str:
    aws = _aws(c)
    return (f"\n[{c.target}]\n# expires {utc_iso(c.expires_at)}\n"
            f"aws_access_key_id = {aws.access_key_id}\n"
            f"aws_secret_access_key = {aws.secret_access_key}\n"
            f"aws_session_token = {aws.session_token}\n")


def recover(directory: Path, name: str, *, now: float, mono: float) -> Credential | None:
    """`aws/<name>.json` from a previous run, if still valid (else None)."""
    try:
        doc = read_process_json(directory, name)
        expires = parse_utc_iso(doc["Expiration"])
        aws = AwsCredentials(access_key_id=str(doc["AccessKeyId"]),
                             secret_access_key=str(doc["SecretAccessKey"]),
                             session_token=str(doc["SessionToken"]), expires_at=expires)
    except (OutputError, ValueError, KeyError, TypeError):
        return None
    return recovered(name, aws, now=now, mono=mono)


def read_process_json(directory: Path, target: str) -> dict[str, object]:
    """Read `aws/<target>.json` back (`credential-process --directory`, recovery)."""
    path = directory / "aws" / f"{target}.json"
    try:
        data = json.loads(read_regular(path))
    except FileNotFoundError as exc:
        raise OutputError(f"no credentials for target {target!r} at {path} "
                          "(is the daemon running, and is the target healthy?)",
                          reason="missing") from exc
    except OSError as exc:
        raise OutputError(f"cannot read {path}: {exc.strerror}", reason="io_error") from exc
    except ValueError:
        # Hidden: a JSONDecodeError holds the whole document, secrets and all.
        raise OutputError(f"{path} is not valid JSON", reason="io_error") from None
    if not isinstance(data, dict):
        raise OutputError(f"{path} is not a JSON object", reason="io_error")
    return data


def _aws(cred: Credential) -> AwsCredentials:
    material = cred.material
    if not isinstance(material, AwsCredentials):
        raise TypeError(f"{cred.target}: not an AWS credential")
    return material
