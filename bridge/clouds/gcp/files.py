"""GCP files in the credential directory (DESIGN.md):

- `gcp/<target>.token`: the raw access token (no trailing newline);
- `gcp/<target>.json`: token, token type, RFC 3339 expiry (google-auth's own parse
  format) and the principal; the token also as `access_token`, so the common OAuth2
  token types (Go's `oauth2.Token`, google-auth-library's `Credentials`) load it as is;
- `gcp/<target>.external_account.json` (opt-in, with `jwt_file`): an `external_account`
  config with which Google SDKs exchange the JWT-SVID file themselves.
"""

from __future__ import annotations

import json
from pathlib import Path

from bridge.clouds.gcp.config import JWT_TOKEN_TYPE, GcpHopConfig
from bridge.clouds.gcp.material import GcpToken
from bridge.model import Credential, parse_utc_iso, utc_iso
from bridge.outputs.atomic import read_regular
from bridge.outputs.files import TargetFile, recovered

TOKEN_OUTPUT = "gcp_token"  # noqa: S105 - a metric label
JSON_OUTPUT = "gcp_json"
EXTERNAL_ACCOUNT_OUTPUT = "gcp_external_account"


def target_files(name: str, first: GcpHopConfig | None, directory: Path) -> list[TargetFile]:
    """A target's GCP files; `first` is its first hop when that is GCP."""
    files = [TargetFile(f"gcp/{name}.token", TOKEN_OUTPUT, render=render_token),
             TargetFile(f"gcp/{name}.json", JSON_OUTPUT, render=render_json)]
    if first is not None and first.external_account_file:
        jwt_path = directory / "jwt" / f"{name}.jwt"
        files.append(TargetFile(f"gcp/{name}.external_account.json", EXTERNAL_ACCOUNT_OUTPUT,
                                static=render_external_account(first, jwt_path)))
    return files


def render_token(cred: Credential) -> bytes:
    return _gcp(cred).access_token.encode()


def render_json(cred: Credential) -> bytes:
    """`gcp/<target>.json`: token, type and RFC 3339 expiry (google-auth's own parse format).

    `access_token`, `token_type` and `expiry` are also the JSON of Go's `oauth2.Token`
    and of OAuth2 token responses, so those loaders read the file directly.
    """
    g = _gcp(cred)
    doc = {"token": g.access_token, "access_token": g.access_token,
           "token_type": g.token_type, "expiry": utc_iso(cred.expires_at),
           "principal": g.principal}
    return json.dumps(doc, indent=2).encode()


def render_external_account(gcp: GcpHopConfig, jwt_path: Path) -> bytes:
    """An `external_account` config: Google SDKs exchange the JWT-SVID file themselves."""
    doc: dict[str, object] = {
        "type": "external_account",
        "audience": gcp.workload_identity_provider,
        "subject_token_type": JWT_TOKEN_TYPE,
        "token_url": gcp.sts_endpoint,
        "credential_source": {"file": str(jwt_path), "format": {"type": "text"}},
    }
    if gcp.service_account:
        doc["service_account_impersonation_url"] = (
            f"{gcp.iam_credentials_endpoint}/v1/projects/-/serviceAccounts/"
            f"{gcp.service_account}:generateAccessToken")
        doc["service_account_impersonation"] = {"token_lifetime_seconds": int(gcp.lifetime)}
    # No "scopes": google-auth ignores them here; the client library supplies its own.
    return json.dumps(doc, indent=2).encode()


def recover(directory: Path, name: str, *, now: float, mono: float) -> Credential | None:
    """`gcp/<name>.json` from a previous run, if still valid (else None)."""
    try:
        doc = json.loads(read_regular(directory / "gcp" / f"{name}.json"))
        expires = parse_utc_iso(doc["expiry"])
        gcp = GcpToken(access_token=str(doc["token"]), expires_at=expires,
                       principal=str(doc.get("principal", "")))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return recovered(name, gcp, now=now, mono=mono)


def _gcp(cred: Credential) -> GcpToken:
    material = cred.material
    if not isinstance(material, GcpToken):
        raise TypeError(f"{cred.target}: not a GCP credential")
    return material
