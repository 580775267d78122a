"""Unmodified SDK clients, run as a subprocess whose environment the test controls.

Prints one JSON document per line on stdout. Secrets are printed only as SHA-256, so a
failing test's output shows no credential.

    python clients.py aws --want N --timeout S --sts URL [--new-session]
        boto3's default chain; one line per distinct access key it is handed, with
        the chain's method and the STS GetCallerIdentity ARN those credentials get.
        --new-session: a new boto3 Session per read (instead of one long-lived one).
    python clients.py gce
        google.auth.default(), then refresh: project, email, token hash, expiry.
    python clients.py azure --scope S --want N --timeout S [--default]
        azure-identity's ManagedIdentityCredential (DefaultAzureCredential with
        --default), one long-lived credential: one line per distinct token it gets.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time


def _emit(**fields: object) -> None:
    print(json.dumps(fields), flush=True)


def _sha(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def _aws(args: argparse.Namespace) -> int:
    import boto3

    _emit(env=sorted(k for k in os.environ if k.startswith("AWS_")))
    session = boto3.Session()
    seen: list[str] = []
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        if args.new_session:
            session = boto3.Session()
        creds = session.get_credentials()
        if creds is None:
            _emit(error="NoCredentials")
            return 2
        frozen = creds.get_frozen_credentials()
        if frozen.access_key not in seen:
            seen.append(frozen.access_key)
            sts = session.client("sts", region_name="us-east-1", endpoint_url=args.sts)
            arn = sts.get_caller_identity()["Arn"]
            _emit(key=frozen.access_key, method=creds.method, arn=arn,
                  secret=_sha(frozen.secret_key), token=_sha(frozen.token or ""))
            if len(seen) >= args.want:
                return 0
        time.sleep(0.2)
    return 1


def _gce() -> int:
    import google.auth
    import google.auth.compute_engine
    import google.auth.transport.urllib3
    import urllib3

    request = google.auth.transport.urllib3.Request(urllib3.PoolManager())
    creds, project = google.auth.default(request=request)
    creds.refresh(request)
    _emit(kind=type(creds).__module__ + "." + type(creds).__name__, project=project,
          email=creds.service_account_email, token=_sha(creds.token),
          expiry=creds.expiry.isoformat(), scopes=list(creds.scopes or []))
    explicit = google.auth.compute_engine.Credentials()
    explicit.refresh(request)
    _emit(explicit_token=_sha(explicit.token), explicit_email=explicit.service_account_email)
    return 0


def _azure(args: argparse.Namespace) -> int:
    from azure.identity import DefaultAzureCredential, ManagedIdentityCredential

    _emit(env=sorted(k for k in os.environ if k.startswith(("AZURE_", "IDENTITY_", "MSI_"))))
    credential = DefaultAzureCredential() if args.default else ManagedIdentityCredential()
    seen: list[str] = []
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        token = credential.get_token(args.scope)
        if _sha(token.token) not in seen:
            seen.append(_sha(token.token))
            _emit(token=seen[-1], expires_on=token.expires_on, now=time.time(),
                  kind=type(credential).__name__)
            if len(seen) >= args.want:
                return 0
        time.sleep(0.2)
    return 1


def main() -> int:
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    aws = sub.add_parser("aws")
    aws.add_argument("--want", type=int, default=1)
    aws.add_argument("--timeout", type=float, default=30.0)
    aws.add_argument("--sts", required=True)
    aws.add_argument("--new-session", action="store_true")
    sub.add_parser("gce")
    azure = sub.add_parser("azure")
    azure.add_argument("--scope", required=True)
    azure.add_argument("--want", type=int, default=1)
    azure.add_argument("--timeout", type=float, default=30.0)
    azure.add_argument("--default", action="store_true")
    args = p.parse_args()
    try:
        if args.cmd == "azure":
            return _azure(args)
        return _aws(args) if args.cmd == "aws" else _gce()
    except Exception as exc:  # report the SDK's own error class and message
        _emit(error=type(exc).__name__, message=str(exc))
        return 2


if __name__ == "__main__":
    sys.exit(main())
