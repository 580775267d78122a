"""Azure files in the credential directory:

- `azure/<target>.token`: the raw access token (no trailing newline);
- `azure/<target>.json`: `access_token`, `token_type`, `expires_on` (epoch seconds, as
  azure-identity's `AccessToken` and the managed-identity endpoints give it), RFC 3339
  `expiry`, `tenant_id`, `client_id` and `resource`.

With `azure.federated_token_file`, the target's `jwt/<target>.jwt` is the file for
`AZURE_FEDERATED_TOKEN_FILE` (the engine's JWT file, kept longer: `config`).
"""

from __future__ import annotations

import json
from pathlib import Path

from bridge.clouds.azure.material import AzureToken
from bridge.model import Credential, parse_utc_iso, utc_iso
from bridge.outputs.atomic import read_regular
from bridge.outputs.files import TargetFile, recovered

TOKEN_OUTPUT = "azure_token"  # noqa: S105 - a metric label
JSON_OUTPUT = "azure_json"


def target_files(name: str) -> list[TargetFile]:
    return [TargetFile(f"azure/{name}.token", TOKEN_OUTPUT, render=render_token),
            TargetFile(f"azure/{name}.json", JSON_OUTPUT, render=render_json)]


def render_token(cred: Credential) -> bytes:
    return _azure(cred).access_token.encode()


def render_json(cred: Credential) -> bytes:
    z = _azure(cred)
    doc = {"access_token": z.access_token, "token_type": z.token_type,
           "expires_on": int(cred.expires_at), "expiry": utc_iso(cred.expires_at),
           "tenant_id": z.tenant_id, "client_id": z.client_id, "resource": z.resource}
    return json.dumps(doc, indent=2).encode()


def recover(directory: Path, name: str, *, now: float, mono: float) -> Credential | None:
    """`azure/<name>.json` from a previous run, if still valid (else None)."""
    try:
        doc = json.loads(read_regular(directory / "azure" / f"{name}.json"))
        token = AzureToken(access_token=str(doc["access_token"]),
                           expires_at=parse_utc_iso(doc["expiry"]),
                           tenant_id=str(doc["tenant_id"]), client_id=str(doc["client_id"]),
                           resource=str(doc["resource"]),
                           token_type=str(doc.get("token_type", "Bearer")))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return recovered(name, token, now=now, mono=mono)


def _azure(cred: Credential) -> AzureToken:
    material = cred.material
    if not isinstance(material, AzureToken):
        raise TypeError(f"{cred.target}: not an Azure credential")
    return material
