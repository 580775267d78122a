"""Real SPIRE on loopback for the integration tests: processes, configs, CLI, clouds.

`SpireDeployment` runs SPIRE v1.15.3's own binaries (built by tests/tools/install-spire.sh):

- spire-server: sqlite3 datastore, disk key manager (keys survive a restart), join-token
  node attestation, `jwt_issuer` = the OIDC Discovery Provider's URL, a 90 s default
  JWT-SVID TTL, ec-p256 keys (GCP refuses ES384), a 1 s entry-cache reload;
- spire-agent: attested with a join token, bootstrapped from `spire-server bundle show`,
  the `unix` workload attestor, disk key manager (a killed agent restarts with its
  SVID: the join token is single-use), a 1 s sync interval;
- oidc-discovery-provider: reads the JWT keys from the server API socket every second
  and serves `/.well-known/openid-configuration` and `/keys` over plain http on
  127.0.0.1 (`insecure_addr`, `allow_insecure_scheme`), issuer = `jwt_issuer`;
- the dev stack's AWS STS and Google STS/IAM emulators, which trust that issuer the way
  the clouds do: they read its discovery document, follow `jwks_uri` and check
  signature, `iss`, `aud`, `exp` and trust conditions on `sub`. They keep no JWKS cache
  (`jwks_cache_seconds=0`), so what they accept is exactly what SPIRE publishes now.

Everything listens on 127.0.0.1 or on unix sockets in a short /tmp directory (AF_UNIX
paths must stay under ~100 bytes). Processes are ended by their own handles only.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from spiffe import JwtBundleSet, JwtSvid, SpiffeId, WorkloadApiClient

from bridge.devstack.aws import AwsStsEmulator
from bridge.devstack.gcp import GcpEmulator, pool_principal_set
from tests.support.require import unavailable
from tests.support.wait import wait_for

SPIRE_VERSION = "1.15.3"
BINARIES = ("spire-server", "spire-agent", "oidc-discovery-provider")
INSTALL_HINT = "tests/tools/install-spire.sh"

TRUST_DOMAIN = "bridge.test"
DEFAULT_JWT_TTL = 90  # seconds: the server's default_jwt_svid_ttl
WORKLOAD_A = f"spiffe://{TRUST_DOMAIN}/workload/a"
WORKLOAD_B = f"spiffe://{TRUST_DOMAIN}/workload/b"
WORKLOAD_B_TTL = 120  # entry-level -jwtSVIDTTL of WORKLOAD_B, to tell the two apart

AWS_AUDIENCE = "sts.amazonaws.com"
ACCOUNT = "111122223333"
ROLE_ANY = f"arn:aws:iam::{ACCOUNT}:role/spire-any"  # trusts spiffe://bridge.test/*
ROLE_A = f"arn:aws:iam::{ACCOUNT}:role/spire-workload-a"  # trusts WORKLOAD_A only
ROLE_B = f"arn:aws:iam::{ACCOUNT}:role/spire-workload-b"  # trusts WORKLOAD_B only
GCP_PROVIDER = (
    "//iam.googleapis.com/projects/424242/locations/global/workloadIdentityPools/spire/"
    "providers/real-spire"
)
SERVICE_ACCOUNT = "spire-writer@bridge-test.iam.gserviceaccount.com"

T = TypeVar("T")


# -- binaries ------------------------------------------------------------------------------


def tool_dir() -> Path:
    """Where install-spire.sh puts the binaries."""
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "spiffe-bridge" / "tools" / f"spire-v{SPIRE_VERSION}" / "bin"


def find_spire() -> dict[str, Path] | None:
    """The three binaries from the tool cache, else all from PATH, else None."""
    cached = {name: tool_dir() / name for name in BINARIES}
    if all(os.access(p, os.X_OK) for p in cached.values()):
        return cached
    found = {name: shutil.which(name) for name in BINARIES}
    if all(found.values()):
        return {name: Path(str(p)) for name, p in found.items()}
    return None


def require_spire() -> dict[str, Path]:
    """The binaries; skip without them, but fail under CI=true (the README's rule)."""
    binaries = find_spire()
    if binaries is None:
        message = (f"SPIRE v{SPIRE_VERSION} binaries ({', '.join(BINARIES)}) not found in "
                   f"{tool_dir()} or on PATH (install: {INSTALL_HINT})")
        unavailable(message)
    return binaries


# -- small helpers ---------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ProcessExitedError(AssertionError):
    """A process the test needs has exited: waiting longer cannot help."""


def wait_until(check: Callable[[], T | None], timeout: float, what: str,
               interval: float = 0.1) -> T:
    """`wait_for` where any error of `check` is "not yet", but a SPIRE process that
    exited ends the wait at once."""
    return wait_for(check, what, timeout=timeout, interval=interval, tolerate=(Exception,),
                    fatal=(ProcessExitedError,))


def http_get(url: str, timeout: float = 3.0) -> tuple[int, bytes]:
    """GET without proxies; error statuses are answers, not exceptions."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=timeout) as r:
            return int(r.status), bytes(r.read())
    except urllib.error.HTTPError as exc:
        return int(exc.code), bytes(exc.read())


def jwt_header(token: str) -> dict[str, Any]:
    import base64

    head = token.split(".", 1)[0]
    return dict(json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4))))


def jwt_claims(token: str) -> dict[str, Any]:
    import base64

    body = token.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))))


def unique_audience(prefix: str) -> str:
    """An audience no earlier fetch used, so the agent's JWT cache cannot answer it."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


# -- processes -------------------------------------------------------------------------------


class Process:
    """One child process with its output in a log file; ended only through its handle."""

    def __init__(self, name: str, argv: list[str], log: Path, cwd: Path) -> None:
        self.name = name
        self.argv = argv
        self.log = log
        self.cwd = cwd
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        if self.running:
            raise RuntimeError(f"{self.name} already running")
        with self.log.open("ab") as out:
            out.write(f"\n==== start {' '.join(self.argv)}\n".encode())
            out.flush()
            self._proc = subprocess.Popen(self.argv, cwd=self.cwd, stdin=subprocess.DEVNULL,
                                          stdout=out, stderr=subprocess.STDOUT)

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def check_alive(self) -> None:
        if self._proc is not None and self._proc.poll() is not None:
            raise ProcessExitedError(f"{self.name} exited with {self._proc.returncode}:\n"
                                 f"{self.tail()}")

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after `timeout` seconds."""
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)

    def kill(self) -> None:
        """SIGKILL: no cleanup at all, as after a crash or an OOM kill."""
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        proc.kill()
        proc.wait(timeout=10)

    def tail(self, chars: int = 4000) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return text[-chars:]


# -- the deployment --------------------------------------------------------------------------


class SpireDeployment:
    """Server, agent, OIDC Discovery Provider and cloud emulators. Not thread-safe."""

    def __init__(self, binaries: dict[str, Path], workdir: Path, *,
                 brokers: Iterable[str] = ()) -> None:
        self.bin = binaries
        self.dir = workdir
        # SPIFFE IDs the agent's `experimental.broker` endpoint serves (none: it is off);
        # its socket is not in the Workload API socket's directory (SPIRE refuses that).
        self.brokers = tuple(brokers)
        self.broker_socket = workdir / "broker" / "b.sock"
        self.server_port = free_port()
        self.oidc_port = free_port()
        self.issuer = f"http://127.0.0.1:{self.oidc_port}"
        self.server_socket = workdir / "s.sock"
        # with a broker endpoint, each socket in its own directory (SPIRE's rule)
        self.agent_socket = workdir / ("api/a.sock" if self.brokers else "a.sock")
        self.bundle_path = workdir / "bundle.pem"
        self.agent_id = ""
        self.uid = os.getuid()
        self.server = Process("spire-server", [str(binaries["spire-server"]), "run",
                                               "-config", str(workdir / "server.conf")],
                              workdir / "server.log", workdir)
        self.agent = Process("spire-agent", [str(binaries["spire-agent"]), "run",
                                             "-config", str(workdir / "agent.conf")],
                             workdir / "agent.log", workdir)
        self.oidc = Process("oidc-discovery-provider",
                            [str(binaries["oidc-discovery-provider"]),
                             "-config", str(workdir / "oidc.conf")],
                            workdir / "oidc.log", workdir)
        # No JWKS cache: what the clouds accept is exactly what SPIRE publishes now.
        self.aws = AwsStsEmulator(jwks_cache_seconds=0)
        self.gcp = GcpEmulator(jwks_cache_seconds=0)
        self._aws_audiences: list[str] = [AWS_AUDIENCE]
        self._extra_emulators: list[AwsStsEmulator] = []
        self.entries: dict[str, str] = {}  # SPIFFE ID -> entry ID (ours)
        if len(str(self.agent_socket)) > 100:
            raise ValueError(f"socket path too long for AF_UNIX: {self.agent_socket}")

    @property
    def agent_socket_uri(self) -> str:
        return f"unix://{self.agent_socket}"

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> SpireDeployment:
        self.start_server_and_agent()
        self._write_oidc_config()
        self.start_oidc()
        self._start_clouds()
        self.create_entry(WORKLOAD_A)
        self.create_entry(WORKLOAD_B, jwt_ttl=WORKLOAD_B_TTL)
        self.wait_for_identity(WORKLOAD_A)
        self.wait_for_identity(WORKLOAD_B)
        return self

    def start_server_and_agent(self) -> SpireDeployment:
        """Server, then an agent attested with a join token (no OIDC, no clouds, no
        entries): all a Workload API benchmark needs."""
        self.dir.mkdir(parents=True, exist_ok=True)
        self._write_server_config()
        self.start_server()
        self.bundle_path.write_text(self.server_cli("bundle", "show"))
        token = str(self.server_json("token", "generate", "-ttl", "600")["value"])
        self.agent_id = f"spiffe://{TRUST_DOMAIN}/spire/agent/join_token/{token}"
        self._write_agent_config(token)
        self.start_agent()
        return self

    def stop(self) -> None:
        for emulator in self._extra_emulators:
            emulator.stop()
        self.gcp.stop()
        self.aws.stop()
        self.oidc.stop()
        self.agent.stop()
        self.server.stop()

    def start_server(self, timeout: float = 30.0) -> None:
        self.server.start()
        wait_until(self._server_healthy, timeout, "spire-server to become healthy")

    def _server_healthy(self) -> bool:
        self.server.check_alive()
        return self._cli_ok("spire-server", "healthcheck", "-socketPath",
                            str(self.server_socket))

    def start_agent(self, timeout: float = 30.0) -> None:
        self.agent.start()
        wait_until(self._agent_healthy, timeout, "spire-agent to become healthy")

    def _agent_healthy(self) -> bool:
        self.agent.check_alive()
        return self._cli_ok("spire-agent", "healthcheck", "-socketPath",
                            str(self.agent_socket))

    def start_oidc(self, timeout: float = 30.0) -> None:
        self.oidc.start()

        def serving_keys() -> bool:
            self.oidc.check_alive()
            status, _ = http_get(self.issuer + "/keys")
            return status == 200

        wait_until(serving_keys, timeout, "the OIDC Discovery Provider to serve /keys")

    def ensure_running(self) -> None:
        """Bring back whatever a previous test left stopped (server before agent)."""
        if not self.server.running:
            self.start_server()
        if not self.agent.running:
            self.start_agent()
        if not self.oidc.running:
            self.start_oidc()
        for spiffe_id in (WORKLOAD_A, WORKLOAD_B):
            self.wait_for_identity(spiffe_id)

    def logs(self) -> str:
        parts = [f"---- {p.name} ({p.log}) ----\n{p.tail()}"
                 for p in (self.server, self.agent, self.oidc)]
        return "\n".join(parts)

    # -- the clouds --------------------------------------------------------------------

    def _start_clouds(self) -> None:
        self.aws.start()
        self.aws.register_oidc_provider(self.issuer, self._aws_audiences)
        self._add_roles(self.aws)
        self.gcp.start()
        self.gcp.add_oidc_provider(GCP_PROVIDER, issuer_uri=self.issuer,
                                   allowed_audiences=[GCP_PROVIDER],
                                   attribute_condition=f"spiffe://{TRUST_DOMAIN}/*")
        self.gcp.add_service_account(SERVICE_ACCOUNT,
                                     workload_identity_users=[pool_principal_set(GCP_PROVIDER)])

    def _add_roles(self, sts: AwsStsEmulator) -> None:
        sts.add_role(ROLE_ANY, provider_url=self.issuer, sub=f"spiffe://{TRUST_DOMAIN}/*",
                     max_session_duration=12 * 3600)
        sts.add_role(ROLE_A, provider_url=self.issuer, aud=AWS_AUDIENCE, sub=WORKLOAD_A)
        sts.add_role(ROLE_B, provider_url=self.issuer, aud=AWS_AUDIENCE, sub=WORKLOAD_B)

    def allow_aws_audience(self, audience: str) -> None:
        """Add a client ID to the IAM OIDC provider (ROLE_ANY has no `aud` condition)."""
        self._aws_audiences.append(audience)
        self.aws.register_oidc_provider(self.issuer, self._aws_audiences)
        for emulator in self._extra_emulators:
            emulator.register_oidc_provider(self.issuer, self._aws_audiences)

    def skewed_sts(self, lifetime: float) -> AwsStsEmulator:
        """Another STS trusting SPIRE, its clock behind so a 15-minute session (the
        shortest AWS grants) has `lifetime` seconds left: the bridge then refreshes every
        `lifetime / 4` seconds, which lets a test watch several refreshes."""
        skew = 15 * 60 - lifetime
        sts = AwsStsEmulator(clock=lambda: time.time() - skew, date_clock=time.time,
                             jwks_cache_seconds=0)
        sts.start()
        self._extra_emulators.append(sts)
        sts.register_oidc_provider(self.issuer, self._aws_audiences)
        self._add_roles(sts)
        return sts

    # -- the server CLI ----------------------------------------------------------------

    def _cli_ok(self, binary: str, *args: str) -> bool:
        proc = subprocess.run([str(self.bin[binary]), *args], capture_output=True,
                              text=True, timeout=10, check=False)
        return proc.returncode == 0

    def server_cli(self, *args: str) -> str:
        """Run `spire-server <args> -socketPath <ours>`; its stdout, or AssertionError."""
        argv = [str(self.bin["spire-server"]), *args, "-socketPath", str(self.server_socket)]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=20, check=False)
        if proc.returncode != 0:
            raise AssertionError(f"{' '.join(argv[1:])} failed ({proc.returncode}):\n"
                                 f"{proc.stdout}{proc.stderr}")
        return proc.stdout

    def server_json(self, *args: str) -> Any:
        return json.loads(self.server_cli(*args, "-output", "json"))

    def create_entry(self, spiffe_id: str, *, jwt_ttl: int | None = None,
                     selectors: Iterable[str] | None = None,
                     x509_ttl: int | None = None) -> str:
        """Register `spiffe_id` for this test process's uid under our agent; its entry ID."""
        argv = ["entry", "create", "-parentID", self.agent_id, "-spiffeID", spiffe_id]
        for selector in selectors or (f"unix:uid:{self.uid}",):
            argv += ["-selector", selector]
        if jwt_ttl is not None:
            argv += ["-jwtSVIDTTL", str(jwt_ttl)]
        if x509_ttl is not None:
            argv += ["-x509SVIDTTL", str(x509_ttl)]
        doc = self.server_json(*argv)
        (result,) = doc["results"]
        entry_id = str(result["entry"]["id"])
        self.entries[spiffe_id] = entry_id
        return entry_id

    def delete_entry(self, spiffe_id: str) -> None:
        entry_id = self.entries.pop(spiffe_id)
        self.server_cli("entry", "delete", "-entryID", entry_id)

    def bundle_jwt_authorities(self) -> dict[str, bool]:
        """The server bundle's JWT authorities: kid -> tainted (`bundle show -output json`)."""
        doc = self.server_json("bundle", "show")
        return {str(a["key_id"]): bool(a.get("tainted", False))
                for a in doc.get("jwt_authorities", [])}

    def discovery_document(self) -> dict[str, Any]:
        status, body = http_get(self.issuer + "/.well-known/openid-configuration")
        assert status == 200, body
        return dict(json.loads(body))

    def published_kids(self) -> set[str]:
        """kids the OIDC Discovery Provider serves at /keys (what the clouds read)."""
        status, body = http_get(self.issuer + "/keys")
        assert status == 200, body
        return {str(k["kid"]) for k in json.loads(body)["keys"]}

    # -- the Workload API, as a workload sees it --------------------------------------

    @contextlib.contextmanager
    def workload_client(self) -> Iterator[WorkloadApiClient]:
        client = WorkloadApiClient(self.agent_socket_uri, default_timeout=10)
        try:
            yield client
        finally:
            client.close()

    def fetch_jwt(self, audience: str, spiffe_id: str | None = None,
                  timeout: float = 10.0) -> JwtSvid:
        with self.workload_client() as client:
            subject = SpiffeId(spiffe_id) if spiffe_id else None
            return client.fetch_jwt_svid({audience}, subject=subject, timeout=timeout)

    def agent_bundle_kids(self) -> set[str]:
        """kids in the agent's JWT bundle for our trust domain (Workload API)."""
        with self.workload_client() as client:
            bundles: JwtBundleSet = client.fetch_jwt_bundles(timeout=10)
        (bundle,) = bundles.bundles
        return set(bundle.jwt_authorities)

    def wait_for_identity(self, spiffe_id: str, timeout: float = 30.0) -> JwtSvid:
        """Until the agent has synced the entry: a fetch for `spiffe_id` succeeds."""
        return wait_until(lambda: self.fetch_jwt(unique_audience("sync"), spiffe_id,
                                                 timeout=5),
                          timeout, f"the agent to hand out {spiffe_id}", interval=0.2)

    # -- configs ---------------------------------------------------------------------

    def _write_server_config(self) -> None:
        d = self.dir
        (d / "server.conf").write_text(f"""
server {{
    bind_address = "127.0.0.1"
    bind_port = "{self.server_port}"
    socket_path = "{self.server_socket}"
    trust_domain = "{TRUST_DOMAIN}"
    data_dir = "{d / 'server-data'}"
    log_level = "DEBUG"
    jwt_issuer = "{self.issuer}"
    default_jwt_svid_ttl = "{DEFAULT_JWT_TTL}s"
    ca_key_type = "ec-p256"
    jwt_key_type = "ec-p256"
    experimental {{
        cache_reload_interval = "1s"
    }}
}}

plugins {{
    DataStore "sql" {{
        plugin_data {{
            database_type = "sqlite3"
            connection_string = "{d / 'datastore.sqlite3'}"
        }}
    }}
    KeyManager "disk" {{
        plugin_data {{
            keys_path = "{d / 'server-keys.json'}"
        }}
    }}
    NodeAttestor "join_token" {{
        plugin_data {{}}
    }}
}}
""")

    def _write_agent_config(self, token: str) -> None:
        d = self.dir
        (d / "agent-data").mkdir(exist_ok=True)
        self.agent_socket.parent.mkdir(exist_ok=True)
        (d / "agent.conf").write_text(f"""
agent {{
    data_dir = "{d / 'agent-data'}"
    log_level = "DEBUG"
    server_address = "127.0.0.1"
    server_port = "{self.server_port}"
    socket_path = "{self.agent_socket}"
    trust_bundle_path = "{self.bundle_path}"
    trust_domain = "{TRUST_DOMAIN}"
    join_token = "{token}"
    experimental {{
        sync_interval = "1s"
        jwt_svid_cache_hit_timeout = "6s"
{self._broker_block()}
    }}
}}

plugins {{
    NodeAttestor "join_token" {{
        plugin_data {{}}
    }}
    KeyManager "disk" {{
        plugin_data {{
            directory = "{d / 'agent-data'}"
        }}
    }}
    WorkloadAttestor "unix" {{
        plugin_data {{}}
    }}
}}
""")

    def _broker_block(self) -> str:
        if not self.brokers:
            return ""
        self.broker_socket.parent.mkdir(exist_ok=True)
        pid_type = "type.googleapis.com/spiffe.broker.WorkloadPIDReference"
        brokers = ",\n".join(
            f'{{ id = "{b}"\n allowed_reference_types = [{{ type_url = "{pid_type}" }}] }}'
            for b in self.brokers)
        return (f'        broker {{\n            socket_path = "{self.broker_socket}"\n'
                f"            brokers = [\n{brokers}\n            ]\n        }}")

    def _write_oidc_config(self) -> None:
        (self.dir / "oidc.conf").write_text(f"""
log_level = "DEBUG"
domains = ["127.0.0.1"]
jwt_issuer = "{self.issuer}"
insecure_addr = "127.0.0.1:{self.oidc_port}"
allow_insecure_scheme = true
server_api {{
    address = "unix://{self.server_socket}"
    poll_interval = "1s"
}}
""")
