"""`credential-process` without the heavy imports: the path the aws CLI and every new SDK
session pay for on each call.

The full CLI loads the config loader, grpc and asyncio before it can ask for one JSON
document. This path uses the standard library only (os, socket, json): it asks the
daemon's reader socket (`serving.reader`, the same caller rules as the gRPC API) or
reads `--directory`, and prints the document. Whatever it cannot answer itself (help, a
usage error, a target that needs this process's own SVID, no daemon, any refusal) it
hands to the full CLI by returning None, so every message and exit code stays the full
CLI's. `--config` is located through a small cache the full CLI writes after it loaded
the config (`locate_cache`), valid while the file's inode, size and mtime are unchanged.
"""

from __future__ import annotations

import json
import os
import sys
import time

from bridge.readersocket import PREFIX, reader_socket

_OPTIONS = ("--target", "--config", "--socket", "--directory", "--workload-api",
            "--audience")
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")
TIMEOUT = 5.0


def credential_process(argv: list[str]) -> int | None:
    """Answer `credential-process ARGV` and return 0, or None for the full CLI."""
    options = _options(argv)
    target = options.get("--target") if options is not None else None
    if options is None or not target or not set(target) <= _NAME_CHARS:
        return None
    if "--directory" in options:
        body = _from_directory(options["--directory"], target)
    else:
        socket_path = _socket_of(options)
        body = _ask(reader_socket(socket_path), target) if socket_path else None
    if body is None:
        return None
    sys.stdout.write(body)
    sys.stdout.flush()
    return 0


def _options(argv: list[str]) -> dict[str, str] | None:
    """`--name value` / `--name=value` pairs of known options; None for anything else."""
    found: dict[str, str] = {}
    i = 0
    while i < len(argv):
        name, eq, value = argv[i].partition("=")
        if name not in _OPTIONS or name in found:
            return None
        if not eq:
            if i + 1 >= len(argv):
                return None
            i += 1
            value = argv[i]
        found[name] = value
        i += 1
    return found


def _socket_of(options: dict[str, str]) -> str | None:
    """The daemon's gRPC socket file from `--socket unix:///...` or the locate cache of
    `--config`; None when neither gives one (the full CLI decides)."""
    uri = options.get("--socket")
    if uri is not None:
        return uri[len("unix://"):] if uri.startswith("unix://") else None
    config = options.get("--config")
    return locate_cached(config) if config else None


def _ask(path: str, target: str) -> str | None:
    """GET the target's credential_process document from the reader socket; None on
    anything but a 200 (no daemon, no reader socket, refused, not valid now)."""
    request = (f"GET {PREFIX}aws/{target}.json HTTP/1.1\r\nHost: localhost\r\n"
               "Connection: close\r\n\r\n").encode()
    import socket  # not on the --directory path

    chunks: list[bytes] = []
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(TIMEOUT)
            sock.connect(path)
            sock.sendall(request)
            while chunk := sock.recv(65536):
                chunks.append(chunk)
    except OSError:
        return None
    head, sep, body = b"".join(chunks).partition(b"\r\n\r\n")
    if not sep or not head.startswith(b"HTTP/1.1 200 "):
        return None
    length = next((line.split(b":", 1)[1].strip() for line in head.split(b"\r\n")
                   if line.lower().startswith(b"content-length:")), None)
    if length is None or not length.isdigit() or int(length) != len(body):
        return None
    return _valid_document(body)


def _from_directory(directory: str, target: str) -> str | None:
    """`DIR/aws/<target>.json` if it is a regular file holding an unexpired document."""
    path = os.path.join(directory, "aws", f"{target}.json")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if (st.st_mode & 0o170000) != 0o100000 or st.st_size > 1 << 20:  # S_ISREG
            return None
        data = os.read(fd, st.st_size + 1)
    except OSError:
        return None
    finally:
        os.close(fd)
    return _valid_document(data)


def _valid_document(data: bytes) -> str | None:
    """`data` as text if it is a credential_process document that has not expired."""
    try:
        doc = json.loads(data)
    except ValueError:
        return None
    if not isinstance(doc, dict) or doc.get("Version") != 1:
        return None
    expires = epoch_of(doc.get("Expiration"))
    if expires is None or expires <= _now():
        return None
    return data.decode()


def epoch_of(text: object) -> int | None:
    """`YYYY-MM-DDTHH:MM:SSZ` as Unix seconds (the documents' one format), else None."""
    if not isinstance(text, str) or len(text) != 20 or text[4] + text[7] + text[10] + (
            text[13] + text[16] + text[19]) != "--T::Z":
        return None
    parts = (text[0:4], text[5:7], text[8:10], text[11:13], text[14:16], text[17:19])
    if not all(p.isdigit() and p.isascii() for p in parts):
        return None
    year, month, day, hour, minute, second = (int(p) for p in parts)
    if not (1 <= month <= 12 and 1 <= day <= 31 and hour < 24 and minute < 60
            and second < 60):
        return None
    # days from 1970-01-01 to the date (H. Hinnant's days_from_civil)
    y = year - (month <= 2)
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5 + day - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    days = era * 146097 + doe - 719468
    return days * 86400 + hour * 3600 + minute * 60 + second


def _now() -> float:
    return time.time()


# -- the locate cache ------------------------------------------------------------------------

def _cache_dir() -> str | None:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(
        os.path.expanduser("~"), ".cache")
    return os.path.join(base, "spiffe-bridge", "locate") if base.startswith("/") else None


def _cache_file(config: str) -> tuple[str, os.stat_result] | None:
    directory = _cache_dir()
    try:
        real = os.path.realpath(config)
        st = os.stat(real)
    except (OSError, ValueError):
        return None
    name = real.replace("%", "%25").replace("/", "%2F")
    if directory is None or len(name) > 200:
        return None
    return os.path.join(directory, name + ".json"), st


def _key(st: os.stat_result) -> list[int]:
    return [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns]


def _private(st: os.stat_result) -> bool:
    """Ours and writable by nobody else: a cache others could write would let them
    point this command at a socket of theirs."""
    return st.st_uid == os.geteuid() and not st.st_mode & 0o022


def locate_cached(config: str) -> str | None:
    """The gRPC socket file of the daemon `config` describes, if the cache knows it for
    this very version of the file."""
    found = _cache_file(config)
    if found is None:
        return None
    path, st = found
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        if not (_private(os.fstat(fd)) and _private(os.stat(os.path.dirname(path)))):
            return None
        doc = json.loads(os.read(fd, 65536))
    except (OSError, ValueError):
        return None
    finally:
        os.close(fd)
    if not isinstance(doc, dict) or doc.get("key") != _key(st):
        return None
    located = doc.get("socket")
    return located if isinstance(located, str) and located.startswith("/") else None


def remember(config: str, socket_file: str) -> None:
    """Record where `config`'s daemon listens (the full CLI, after loading it); best
    effort: a cache that cannot be written only costs the next call the slow path."""
    found = _cache_file(config)
    if found is None:
        return
    path, st = found
    directory = os.path.dirname(path)
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        if not _private(os.stat(directory)):
            return
        temporary = f"{path}.{os.getpid()}.tmp"
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump({"key": _key(st), "socket": socket_file}, out)
        os.replace(temporary, path)
        _prune(directory)
    except OSError:
        return


def _prune(directory: str) -> None:
    """Forget configs that no longer exist (test runs and temporary configs come and go)."""
    for name in os.listdir(directory)[:1024]:
        config = name.removesuffix(".json").replace("%2F", "/").replace("%25", "%")
        if name.endswith(".json") and not os.path.exists(config):
            os.unlink(os.path.join(directory, name))
