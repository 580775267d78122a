"""A minimal real SPIRE (server + agent) on this machine, for the read-path benchmark.

spire-server (sqlite, in-memory keys, join-token attestation) and spire-agent (join
token, in-memory keys, the `unix` workload attestor) from SPIRE v1.15.3's binaries, as
built by tests/tools/install-spire.sh, plus one registration entry for this process's
uid. Logs go to files in the work directory; processes are ended through their own
handles; every wait is bounded. No OIDC provider and no clouds: only FetchJWTSVID is
measured.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

VERSION = "1.15.3"
BINARIES = ("spire-server", "spire-agent")
TRUST_DOMAIN = "bench.test"
SPIFFE_ID = f"spiffe://{TRUST_DOMAIN}/bench"


def tool_dir() -> Path:
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "spiffe-bridge" / "tools" / f"spire-v{VERSION}" / "bin"


def find_binaries() -> tuple[dict[str, Path] | None, str]:
    """The binaries, or None and why not."""
    cached = {b: tool_dir() / b for b in BINARIES}
    if all(os.access(p, os.X_OK) for p in cached.values()):
        return cached, ""
    found = {b: shutil.which(b) for b in BINARIES}
    if all(found.values()):
        return {b: Path(str(p)) for b, p in found.items()}, ""
    return None, (f"SPIRE v{VERSION} binaries not found in {tool_dir()} or on PATH "
                  "(build them with tests/tools/install-spire.sh)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Spire:
    def __init__(self, binaries: dict[str, Path], workdir: Path) -> None:
        self.bin = binaries
        self.dir = workdir
        self.server_socket = workdir / "s.sock"
        self.agent_socket = workdir / "a.sock"
        self.port = _free_port()
        self._procs: dict[str, subprocess.Popen[bytes]] = {}

    @property
    def agent_uri(self) -> str:
        return f"unix://{self.agent_socket}"

    def agent_pid(self) -> int:
        return self._procs["spire-agent"].pid

    def start(self) -> Spire:
        self.dir.mkdir(parents=True, exist_ok=True)
        try:
            self._write_server_conf()
            self._run("spire-server", "server.conf")
            self._until(lambda: self._ok("spire-server", "healthcheck", "-socketPath",
                                         str(self.server_socket)), "spire-server healthy")
            (self.dir / "bundle.pem").write_text(self._server("bundle", "show"))
            token = json.loads(self._server("token", "generate", "-ttl", "600",
                                            "-output", "json"))["value"]
            self._write_agent_conf(token)
            self._run("spire-agent", "agent.conf")
            self._until(lambda: self._ok("spire-agent", "healthcheck", "-socketPath",
                                         str(self.agent_socket)), "spire-agent healthy")
            self._server("entry", "create", "-parentID",
                         f"spiffe://{TRUST_DOMAIN}/spire/agent/join_token/{token}",
                         "-spiffeID", SPIFFE_ID, "-selector", f"unix:uid:{os.getuid()}")
            self._until(self._fetch_ok, "the agent to hand out the bench SVID")
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for name in ("spire-agent", "spire-server"):
            proc = self._procs.pop(name, None)
            if proc is None or proc.poll() is not None:
                continue
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)

    def logs(self) -> str:
        return "\n".join(f"--- {n}\n{(self.dir / f'{n}.log').read_text(errors='replace')[-2000:]}"
                         for n in BINARIES if (self.dir / f"{n}.log").exists())

    # -- plumbing --------------------------------------------------------------------

    def _run(self, name: str, conf: str) -> None:
        with (self.dir / f"{name}.log").open("ab") as log:
            self._procs[name] = subprocess.Popen(
                [str(self.bin[name]), "run", "-config", str(self.dir / conf)], cwd=self.dir,
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)

    def _until(self, check: object, what: str, timeout: float = 45.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            for name, proc in self._procs.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited ({proc.returncode}):\n{self.logs()}")
            if check():  # type: ignore[operator]
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out waiting for {what}:\n{self.logs()}")
            time.sleep(0.2)

    def _ok(self, binary: str, *args: str) -> bool:
        return subprocess.run([str(self.bin[binary]), *args], capture_output=True,
                              timeout=10, check=False).returncode == 0

    def _server(self, *args: str) -> str:
        proc = subprocess.run([str(self.bin["spire-server"]), *args, "-socketPath",
                               str(self.server_socket)], capture_output=True, text=True,
                              timeout=20, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"spire-server {' '.join(args)}: {proc.stdout}{proc.stderr}")
        return proc.stdout

    def _fetch_ok(self) -> bool:
        from spiffe import WorkloadApiClient

        try:
            client = WorkloadApiClient(self.agent_uri, default_timeout=3)
        except Exception:
            return False
        try:
            client.fetch_jwt_svid({"bench"}, timeout=3)
            return True
        except Exception:
            return False
        finally:
            client.close()

    def _write_server_conf(self) -> None:
        d = self.dir
        (d / "server.conf").write_text(f"""
server {{
    bind_address = "127.0.0.1"
    bind_port = "{self.port}"
    socket_path = "{self.server_socket}"
    trust_domain = "{TRUST_DOMAIN}"
    data_dir = "{d / 'server-data'}"
    log_level = "WARN"
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
    KeyManager "memory" {{
        plugin_data {{}}
    }}
    NodeAttestor "join_token" {{
        plugin_data {{}}
    }}
}}
""")

    def _write_agent_conf(self, token: str) -> None:
        d = self.dir
        (d / "agent-data").mkdir(exist_ok=True)
        (d / "agent.conf").write_text(f"""
agent {{
    data_dir = "{d / 'agent-data'}"
    log_level = "WARN"
    server_address = "127.0.0.1"
    server_port = "{self.port}"
    socket_path = "{self.agent_socket}"
    trust_bundle_path = "{d / 'bundle.pem'}"
    trust_domain = "{TRUST_DOMAIN}"
    join_token = "{token}"
    experimental {{
        sync_interval = "1s"
    }}
}}
plugins {{
    NodeAttestor "join_token" {{
        plugin_data {{}}
    }}
    KeyManager "memory" {{
        plugin_data {{}}
    }}
    WorkloadAttestor "unix" {{
        plugin_data {{}}
    }}
}}
""")
