"""`spiffe-bridge dev`: the dev stack plus the real daemon on a demo config. DEVELOPMENT ONLY.

Starts the emulators on loopback, writes a config that points the bridge at them, runs
the same daemon `run` runs, and prints what a user needs to try the credentials: the
commands name this interpreter and its `spiffe-bridge` by absolute path, so they work
pasted into a new shell with no virtualenv activated. On exit the credentials (and the
temporary directories it made) are removed unless `keep`: a demo leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import shutil
import socket
import sys
import tempfile
from pathlib import Path

import yaml

from bridge.app import run_until_signalled
from bridge.config import Config, load_config
from bridge.devstack.broker import BrokerServer
from bridge.devstack.stack import (
    AWS_AUDIENCE,
    AZURE_CLIENT_ID,
    AZURE_STORAGE_SCOPE,
    AZURE_TENANT_ID,
    DEMO_AWS_ACCOUNT,
    DEMO_ROLE_ARN,
    DEMO_SERVICE_ACCOUNT,
    GCP_AWS_PROVIDER,
    GCP_PROVIDER,
    DevStack,
)
from bridge.logs import Redactor
from bridge.outputs.atomic import is_memory_backed


def _free_port(preferred: int) -> int:
    """The preferred port if it is free on loopback, else any free one."""
    for port in (preferred, 0):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return int(s.getsockname()[1])
    raise OSError("no free loopback port")


def write_demo_config(stack: DevStack, workdir: Path, *, outputs: Path | None = None,
                      broker: BrokerServer | None = None) -> Path:
    """A config against the stack's emulators: an AWS target (plus its JWT file), a GCP
    target impersonating a service account, an AWS->GCP chain, an Azure target and an
    AWS->Azure chain; with `broker`, a workload target (each local process its own role,
    through the dev Broker API). The credentials go to `outputs`, else to a new
    directory on /dev/shm (else `workdir/creds`)."""
    if outputs is None:
        shm = Path("/dev/shm")
        outputs = Path(tempfile.mkdtemp(prefix="spiffe-bridge-dev-", dir=shm)) / "creds" \
            if shm.is_dir() and is_memory_backed(shm) else workdir / "creds"
    outputs.parent.mkdir(parents=True, exist_ok=True)
    on_tmpfs = is_memory_backed(outputs.parent)
    azure = {"tenant_id": AZURE_TENANT_ID, "client_id": AZURE_CLIENT_ID,
             "scopes": [AZURE_STORAGE_SCOPE], "authority_host": stack.azure_authority}
    doc = {
        "workload_api": {"socket": stack.workload_socket_uri, "timeout": "5s"},
        "outputs": {"directory": str(outputs), "allow_non_tmpfs": not on_tmpfs},
        "http": {"address": f"127.0.0.1:{_free_port(9464)}"},
        "grpc": {"socket": f"unix://{workdir}/bridge.sock"},
        "targets": [
            {"name": "demo", "jwt_file": True,
             "aws": {"role_arn": DEMO_ROLE_ARN, "region": "us-east-1", "duration": "1h",
                     "sts_endpoint": stack.aws_sts_url}},
            {"name": "demo-gcp",
             "gcp": {"workload_identity_provider": GCP_PROVIDER,
                     "service_account": DEMO_SERVICE_ACCOUNT,
                     "sts_endpoint": stack.gcp_sts_url,
                     "iam_credentials_endpoint": stack.gcp_iam_url}},
            {"name": "demo-aws-to-gcp",
             "aws": {"role_arn": DEMO_ROLE_ARN, "region": "us-east-1",
                     "sts_endpoint": stack.aws_sts_url},
             "chain": [{"gcp": {"workload_identity_provider": GCP_AWS_PROVIDER,
                                "service_account": DEMO_SERVICE_ACCOUNT,
                                "sts_endpoint": stack.gcp_sts_url,
                                "iam_credentials_endpoint": stack.gcp_iam_url}}]},
            {"name": "demo-azure", "azure": azure},
            {"name": "demo-aws-to-azure",
             "aws": {"role_arn": DEMO_ROLE_ARN, "region": "us-east-1",
                     "sts_endpoint": stack.aws_sts_url},
             "chain": [{"azure": azure}]},
        ],
    }
    if broker is not None:
        doc["broker"] = {"socket": broker.uri, "agent_id": DEMO_AGENT_ID,
                         "spiffe_id": demo_bridge_id(stack)}
        doc["workloads"] = {"grpc_socket": f"unix://{workdir}/workload.sock"}
        doc["workload_targets"] = [{
            "name": DEMO_WORKLOAD_TARGET,
            "match": f"spiffe://{stack.trust_domain}/ns/{{ns}}/sa/{{sa}}",
            "aws": {"role_arn": f"arn:aws:iam::{DEMO_AWS_ACCOUNT}:role/{{ns}}-{{sa}}",
                    "region": "us-east-1", "sts_endpoint": stack.aws_sts_url},
            "serve": {"grpc": True}}]
    path = workdir / "bridge.yaml"
    path.write_text("# spiffe-bridge dev: demo config (development only)\n"
                    + yaml.safe_dump(doc, sort_keys=False))
    return path


DEMO_AGENT_ID = "spiffe://example.org/spire/agent/dev/node"
DEMO_WORKLOAD_TARGET = "demo-workload"
OTHER_UID = 65534  # nobody: the second demo workload


def demo_bridge_id(stack: DevStack) -> str:
    return f"spiffe://{stack.trust_domain}/spiffe-bridge"


def demo_broker(stack: DevStack, workdir: Path) -> BrokerServer:
    """The dev Broker API endpoint with two demo workloads, two roles: this user's
    processes are `ns/demo/sa/a` (role demo-a), uid 65534's `ns/demo/sa/b` (demo-b);
    each role trusts its own SPIFFE ID only."""
    assert stack.x509 is not None
    registrations: dict[int, list[str]] = {}
    for uid, name in ((os.getuid(), "a"), (OTHER_UID, "b")):
        spiffe_id = f"spiffe://{stack.trust_domain}/ns/demo/sa/{name}"
        registrations.setdefault(uid, [spiffe_id])
        stack.aws.add_role(f"arn:aws:iam::{DEMO_AWS_ACCOUNT}:role/demo-{name}",
                           provider_url=stack.issuer, aud=AWS_AUDIENCE, sub=spiffe_id)
    return BrokerServer(workdir / "broker" / "broker.sock", authority=stack.authority,
                        ca=stack.x509, agent_id=DEMO_AGENT_ID, brokers=[demo_bridge_id(stack)],
                        registrations=registrations)


def shell_commands() -> tuple[str, str]:
    """(python, spiffe-bridge) as shell words naming this interpreter's files by
    absolute path: pasted into a shell without the virtualenv, they still run these."""
    python = Path(sys.executable)
    script = python.parent / "spiffe-bridge"
    cli = shlex.quote(str(script)) if script.is_file() else f"{shlex.quote(str(python))} -m bridge"
    return shlex.quote(str(python)), cli


def usage(config_path: Path, stack: DevStack, *, keep: bool = False) -> str:
    config = load_config(config_path)
    out = config.outputs.directory
    python, cli = shell_commands()
    q = shlex.quote
    kept = "kept on exit: --keep" if keep else "removed on exit; --keep keeps them"
    return f"""
spiffe-bridge dev is running (development stack: emulators on loopback, not real clouds)

  Workload API (SPIFFE agent): {stack.workload_socket_uri}
  OIDC issuer:                 {stack.issuer}
  AWS STS emulator:            {stack.aws_sts_url}
  GCP STS / IAM emulator:      {stack.gcp_sts_url}  {stack.gcp_iam_url}
  Entra ID emulator (https):   {stack.azure_authority}  (CA: {stack.ca_file})
  Bridge config:               {config_path}
  Credentials:                 {out}/aws/credentials  (profile "demo")
                               {out}/aws/demo.json    (credential_process JSON)
                               {out}/jwt/demo.jwt     (the JWT-SVID itself)
                               {out}/gcp/demo-gcp.token  {out}/gcp/demo-gcp.json
                               {out}/gcp/demo-aws-to-gcp.json  (AWS -> GCP chain)
                               {out}/azure/demo-azure.token  {out}/azure/demo-azure.json
                               {out}/azure/demo-aws-to-azure.json  (AWS -> Azure chain)
                               ({kept})
  gRPC API:                    {config.grpc.socket}
{_broker_usage(config)}
  Metrics / health:            http://{config.http_address}/metrics  /healthz  /readyz

Try it in another shell:
  export AWS_SHARED_CREDENTIALS_FILE={q(str(out / "aws" / "credentials"))} AWS_PROFILE=demo
  {python} -c "import boto3; print(boto3.Session().get_credentials().get_frozen_credentials())"
  {cli} credential-process --target demo --config {q(str(config_path))}
  {cli} status --config {q(str(config_path))}
  curl -s http://{config.http_address}/readyz{_workload_usage(config, cli)}

Press Ctrl-C to stop.
"""


def _broker_usage(config: Config) -> str:
    if config.broker is None or config.workloads is None:
        return ""
    return (f"  Broker API (dev agent):      {config.broker.socket}\n"
            f"  Workload socket:             {config.workloads.grpc_socket}  (workload target "
            f"{DEMO_WORKLOAD_TARGET}:\n"
            "                               each process its own role: yours demo-a, uid "
            f"{OTHER_UID}'s demo-b)")


def _workload_usage(config: Config, cli: str) -> str:
    """The banner's lines for the workload target (each process its own identity)."""
    if not config.workload_targets or config.workloads is None:
        return ""
    socket = config.workloads.grpc_socket or ""
    return (f"\n  {cli} credential-process --workload-target {DEMO_WORKLOAD_TARGET} "
            f"--socket {shlex.quote(socket)}")


def run_demo(workdir: Path | None, *, redactor: Redactor, keep: bool = False) -> int:
    """Run until SIGINT/SIGTERM; returns the exit code.

    With `workdir`, everything (sockets, config, credentials in `workdir/creds`) is
    there; else in new temporary directories. Unless `keep`, the credentials and the
    temporary directories are removed on the way out, whatever the way.
    """
    base = (workdir or Path(tempfile.mkdtemp(prefix="sbdev-", dir="/tmp"))).absolute()
    base.mkdir(parents=True, exist_ok=True)
    made: list[Path] = [] if workdir else [base]
    try:
        with DevStack(base / "stack", x509=True, identities=[
                "spiffe://example.org/demo", "spiffe://example.org/spiffe-bridge"]) as stack, \
                demo_broker(stack, base) as broker:
            # The Entra emulator speaks https with the dev CA; the bridge's Entra client
            # (requests) trusts it through this, in this dev process only.
            os.environ["REQUESTS_CA_BUNDLE"] = str(stack.ca_file)
            config_path = write_demo_config(stack, base, broker=broker,
                                            outputs=base / "creds" if workdir else None)
            config = load_config(config_path)
            outputs = config.outputs.directory
            made.append(outputs if outputs.parent == base else outputs.parent)
            print(usage(config_path, stack, keep=keep), flush=True)
            asyncio.run(run_until_signalled(config_path, config, redactor=redactor))
    finally:
        if not keep:
            for path in made:
                shutil.rmtree(path, ignore_errors=True)
    gone = "kept" if keep else "removed"
    print(f"spiffe-bridge dev stopped; credentials {gone}", file=sys.stderr)
    return 0
