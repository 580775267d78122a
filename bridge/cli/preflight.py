"""What a valid config points at on this host, checked before `check` says OK and before
`run` starts: footguns the daemon would otherwise carry out.

- `metadata.container.token_file` (or `metadata.azure_app_service.header_file`) names an
  existing file the bridge did not write: `run` would replace it with a token. Ours is
  recognised by what `write_token_file` leaves: inside the output directory, or a
  regular 0600 file of this uid holding exactly one 43-character base64url token.
- `grpc.socket` is a socket something is listening on (another daemon): `run` would
  unlink it and take its clients. A socket nobody answers on is a leftover and is fine;
  for `check`, the bridge running this very config file is fine too.
- `outputs.directory` (or a parent) is a shared directory, such as /tmp or /dev/shm
  itself: `run` would chmod it 0700 (`outputs.atomic.trust_problem`; `run` refuses it
  when it prepares the directory, with the owner rules too).
"""

from __future__ import annotations

import os
import re
import socket
import stat
import struct
from pathlib import Path
from urllib.parse import urlsplit

from bridge.config import Config
from bridge.errors import ConfigProblem
from bridge.outputs import atomic
from bridge.serving import activation

_OUR_TOKEN = re.compile(rb"[A-Za-z0-9_-]{43}")  # secrets.token_urlsafe(32)
CONNECT_TIMEOUT = 1.0


def preflight(config: Config, config_path: Path, *, starting: bool) -> list[ConfigProblem]:
    """Every footgun found, each naming its key. `starting`: for `run` (no exception
    for a bridge already serving this config: two daemons must not share a socket)."""
    problems: list[ConfigProblem] = []
    directory = config.outputs.directory
    # `run` checks the directory when it prepares it (a runtime failure, exit 1, also on
    # reload); `check` with the mode rules only: it may run as another user.
    if not starting and (problem := atomic.trust_problem(directory, owners=False)):
        problems.append(ConfigProblem("outputs.directory", problem))
    for key, endpoint in config.metadata.endpoints:
        for name in ("token_file", "header_file"):  # the container's, Azure App Service's
            token_file = getattr(endpoint, name, None)
            if isinstance(token_file, Path) and (problem := _foreign_token_file(
                    token_file, directory, key=name)):
                problems.append(ConfigProblem(f"metadata.{key}.{name}", problem))
    if problem := _live_socket(urlsplit(config.grpc.socket).path, config_path,
                               starting=starting):
        problems.append(ConfigProblem("grpc.socket", problem))
    return problems


def _foreign_token_file(path: Path, directory: Path, *, key: str = "token_file") -> str | None:
    if path.is_relative_to(directory):
        return None  # the output directory is the bridge's own
    try:
        st = path.lstat()
    except FileNotFoundError:
        return None
    except OSError as exc:
        return f"cannot inspect {path}: {exc.strerror}"
    ours = (stat.S_ISREG(st.st_mode) and st.st_uid == os.geteuid()
            and stat.S_IMODE(st.st_mode) == atomic.FILE_MODE and st.st_size == 43)
    if ours:
        try:
            ours = bool(_OUR_TOKEN.fullmatch(atomic.read_regular(path, limit=64)))
        except OSError:
            ours = False
    if ours:
        return None
    return (f"{path} exists and is not a token file the bridge wrote; `run` would replace "
            f"it. Point {key} at a new path (or inside outputs.directory)")


def _live_socket(path: str, config_path: Path, *, starting: bool) -> str | None:
    if starting and activation.holds_unix(path):
        return None  # systemd passed it to this process (socket activation)
    try:
        if not stat.S_ISSOCK(os.lstat(path).st_mode):
            return None  # absent, or not a socket (the server refuses to replace that)
    except OSError:
        return None
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(CONNECT_TIMEOUT)
        try:
            s.connect(path)
        except OSError:
            return None  # a leftover of a stopped process: nobody answers
        pid = _peer_pid(s)
    if not starting and pid is not None and (pid == 1 or _runs_config(pid, config_path)):
        return None  # `check` of the config the running bridge serves, or the socket a
        # systemd .socket unit holds for it (`run` adopts it; see serving/activation.py)
    who = f" (pid {pid})" if pid else ""
    return (f"unix://{path} is a live socket another process{who} listens on; `run` "
            "would take it over. Stop that process or choose another path")


def _peer_pid(s: socket.socket) -> int | None:
    try:
        raw = s.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except OSError:
        return None
    pid = int(struct.unpack("3i", raw)[0])
    return pid or None


def _runs_config(pid: int, config_path: Path) -> bool:
    """Whether `pid` is `spiffe-bridge run --config <this file>` (or `dev`'s daemon)."""
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        cwd = Path(os.readlink(f"/proc/{pid}/cwd"))
    except OSError:
        return False
    words = [a.decode(errors="replace") for a in args]
    if "run" not in words or "--config" not in words:
        return False
    i = words.index("--config") + 1
    if i >= len(words):
        return False
    return os.path.realpath(cwd / words[i]) == os.path.realpath(config_path)
