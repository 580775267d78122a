"""The credential directory: the store mirrored into files, atomically and privately.

Layout (DESIGN.md): one subdirectory per cloud (its files are the cloud's: `TargetFile`
and `SharedFile` values) and `jwt/<target>.jwt` for the opt-in JWT-SVID files. Only
credentials still valid are written; an expired one is removed, so no reader can pick
it up. Unchanged files are not rewritten.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypeVar

import jwt

from bridge.errors import OutputError
from bridge.model import Credential, JwtSvid, TargetStatus
from bridge.outputs import atomic
from bridge.outputs.files import SharedFile, TargetFile

log = logging.getLogger(__name__)
T = TypeVar("T")
JWT_OUTPUT = "jwt"
DIRECTORY_OUTPUT = "directory"


class JwtFileTarget(Protocol):
    """What `recover_svids` needs of a configured target."""

    @property
    def name(self) -> str: ...

    @property
    def audience(self) -> str: ...

    @property
    def jwt_file(self) -> bool: ...


@dataclass(frozen=True, slots=True)
class OutputFailure:
    output: str  # bounded label: a file's `output`, jwt, or directory
    error: OutputError


class CredentialDirectory:
    """Owns the output directory: prepares it once, then mirrors the store into it."""

    name = "files"

    def __init__(self, directory: Path, *, allow_non_tmpfs: bool,
                 files: Mapping[str, Sequence[TargetFile]] | None = None,
                 shared: Sequence[SharedFile] = (), jwt_targets: Iterable[str] = (),
                 subdirs: Sequence[str] = ()) -> None:
        self.directory = directory
        self._allow_non_tmpfs = allow_non_tmpfs
        self._jwt_targets = tuple(sorted(jwt_targets))
        self._subdirs = tuple(dict.fromkeys([*subdirs, JWT_OUTPUT]))
        # subdirectory -> ((target, file), ...) and its shared files, in writing order
        self._files: dict[str, list[tuple[str, TargetFile]]] = {}
        for target, target_files in sorted((files or {}).items()):
            for f in target_files:
                self._files.setdefault(_subdir_of(f.path), []).append((target, f))
        self._shared: dict[str, list[SharedFile]] = {}
        for sf in shared:
            self._shared.setdefault(_subdir_of(sf.path), []).append(sf)
        self._written: dict[str, str] = {}
        # key -> (the immutable value rendered, its bytes, their digest): a pass renders
        # and hashes only what changed since the last one (1,000 targets: one pass per
        # refresh burst would otherwise re-render every file).
        self._rendered: dict[str, tuple[object, bytes, str]] = {}

    def prepare(self) -> int:
        """Create and check the directory, sweep stale temp files, probe writability.

        Returns how many stale temp files were removed. Raises OutputError.
        """
        d = self.directory
        if d.is_symlink():
            raise OutputError(f"{d} is a symlink; refusing it", reason="symlink")
        if not d.exists():
            if not d.parent.is_dir():
                raise OutputError(f"{d.parent} does not exist", reason="missing")
            try:
                d.mkdir(mode=atomic.DIR_MODE)
            except OSError as exc:
                raise OutputError(f"cannot create {d}: {exc.strerror}",
                                  reason="permission") from exc
        if not self._allow_non_tmpfs and not atomic.is_memory_backed(d):
            raise OutputError(
                f"{d} is not on tmpfs/ramfs ({atomic.filesystem_type(d) or 'unknown'}); "
                "credentials would reach a disk. Use a tmpfs directory or set "
                "outputs.allow_non_tmpfs: true", reason="not_tmpfs")
        removed = 0
        with atomic.open_dir(d) as root:
            os.fchmod(root, atomic.DIR_MODE)
            removed += atomic.sweep_temp_files(root)
            for sub in self._subdirs:
                atomic.ensure_dir(root, sub)
                with self._subdir(root, sub) as fd:
                    removed += atomic.sweep_temp_files(fd)
            atomic.write_file(root, ".probe", b"")
            atomic.remove_file(root, ".probe")
        if removed:
            log.info("removed %d stale temp file(s) from %s", removed, d)
        return removed

    def apply(self, statuses: Mapping[str, TargetStatus], now: float) -> list[OutputFailure]:
        """Mirror `statuses` into files; return what failed (the old files stay)."""
        failures: list[OutputFailure] = []
        try:
            with atomic.open_dir(self.directory) as root:
                os.fchmod(root, atomic.DIR_MODE)
                for sub in dict.fromkeys([*self._files, *self._shared]):
                    failures += self._apply_subdir(root, sub, statuses, now)
                failures += self._apply_jwt(root, statuses, now)
        except OutputError as exc:
            failures.append(OutputFailure(DIRECTORY_OUTPUT, exc))
        except OSError as exc:
            failures.append(OutputFailure(DIRECTORY_OUTPUT, OutputError(
                f"{self.directory}: {exc.strerror}", retryable=True,
                reason=atomic.os_error_reason(exc))))
        return failures

    def _apply_subdir(self, root: int, sub: str, statuses: Mapping[str, TargetStatus],
                      now: float) -> list[OutputFailure]:
        failures: list[OutputFailure] = []
        valid: dict[str, Credential] = {}
        atomic.ensure_dir(root, sub)
        with self._subdir(root, sub) as fd:
            present = _listing(fd)
            for target, f in self._files.get(sub, ()):
                name = f.path.split("/", 1)[1]
                if f.static is not None:
                    self._sync(fd, present, f.path, name, _digested(f.static),
                               output=f.output, failures=failures)
                    continue
                status = statuses.get(target)
                cred = status.valid_credential(now) if status else None
                if cred is not None:
                    valid[target] = cred
                rendered = self._render(f.path, cred, f.render) if (
                    cred is not None and f.render is not None) else None
                self._sync(fd, present, f.path, name, rendered, output=f.output,
                           failures=failures)
            for sf in self._shared.get(sub, ()):
                name = sf.path.split("/", 1)[1]
                creds = [c for t in sorted(sf.targets) if (c := _valid(statuses, t, now))]
                # Not created before there is something to put in it, so "the file
                # exists" means "something in it is ready"; once it exists it is kept
                # in step (expired entries are dropped from it).
                if creds or name in present:
                    self._sync(fd, present, sf.path, name, _digested(sf.render(creds)),
                               output=sf.output, failures=failures)
        return failures

    def _apply_jwt(self, root: int, statuses: Mapping[str, TargetStatus],
                   now: float) -> list[OutputFailure]:
        failures: list[OutputFailure] = []
        if not self._jwt_targets:
            return failures
        atomic.ensure_dir(root, JWT_OUTPUT)
        with self._subdir(root, JWT_OUTPUT) as fd:
            present = _listing(fd)
            for name in self._jwt_targets:
                status = statuses.get(name)
                svid = status.svid if status else None
                data = svid.token.encode() if svid and svid.expires_at > now else None
                self._sync(fd, present, f"jwt/{name}.jwt", f"{name}.jwt", _digested(data),
                           output=JWT_OUTPUT, failures=failures)
        return failures

    def _render(self, key: str, value: T, render: Callable[[T], bytes]) -> tuple[bytes, str]:
        """`render(value)` and its digest, computed once per value: credentials are
        immutable and replaced whole, so the same object renders the same bytes."""
        hit = self._rendered.get(key)
        if hit is not None and hit[0] is value:
            return hit[1], hit[2]
        data = render(value)
        digest = hashlib.sha256(data).hexdigest()
        self._rendered[key] = (value, data, digest)
        return data, digest

    def _sync(self, fd: int, present: frozenset[str], key: str, name: str,
              rendered: tuple[bytes, str] | None, *, output: str,
              failures: list[OutputFailure]) -> None:
        """Make file `name` hold `rendered` (bytes, digest), or remove it for None.
        `present` is the directory's listing from the start of this pass."""
        digest = rendered[1] if rendered is not None else None
        if digest is None:
            self._rendered.pop(key, None)
            if name not in present:  # nothing to remove
                self._written.pop(key, None)
                return
        elif self._written.get(key) == digest and name in present:
            return  # unchanged and still there
        try:
            if rendered is None:
                atomic.remove_file(fd, name)
            else:
                atomic.write_file(fd, name, rendered[0])
        except OutputError as exc:
            failures.append(OutputFailure(output, exc))
            return
        if digest is None:
            self._written.pop(key, None)
        else:
            self._written[key] = digest

    @staticmethod
    def _subdir(root: int, name: str) -> _SubDir:
        return _SubDir(root, name)


class _SubDir:
    """Context manager: an O_NOFOLLOW fd of a subdirectory of an open directory."""

    def __init__(self, root: int, name: str) -> None:
        self._root, self._name, self._fd = root, name, -1

    def __enter__(self) -> int:
        try:
            self._fd = os.open(self._name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
                               | os.O_CLOEXEC, dir_fd=self._root)
        except OSError as exc:
            raise OutputError(f"cannot open {self._name}/: {exc.strerror} (symlink?)",
                              reason="symlink") from exc
        return self._fd

    def __exit__(self, *_: object) -> None:
        os.close(self._fd)


def _subdir_of(path: str) -> str:
    sub, sep, name = path.partition("/")
    if not sep or not name or "/" in name:
        raise ValueError(f"output path {path!r} is not <subdirectory>/<file>")
    return sub


def _valid(statuses: Mapping[str, TargetStatus], target: str, now: float) -> Credential | None:
    status = statuses.get(target)
    return status.valid_credential(now) if status else None


def _digested(data: bytes | None) -> tuple[bytes, str] | None:
    return None if data is None else (data, hashlib.sha256(data).hexdigest())


def _listing(fd: int) -> frozenset[str]:
    """Names in an open directory: one syscall per pass instead of a stat per file."""
    return frozenset(os.listdir(fd))


def recover_svids(directory: Path, targets: Iterable[JwtFileTarget], now: float
                  ) -> dict[str, JwtSvid]:
    """JWT-SVID files a previous run wrote that are still unexpired: kept in place (and
    served) while the agent is unreachable after a restart, like the credentials."""
    found: dict[str, JwtSvid] = {}
    for t in targets:
        if not t.jwt_file:
            continue
        try:
            token = (directory / "jwt" / f"{t.name}.jwt").read_text().strip()
            claims = jwt.decode(token, options={"verify_signature": False})
            expires, issued = float(claims["exp"]), float(claims.get("iat", now))
            svid = JwtSvid(spiffe_id=str(claims["sub"]), audience=t.audience,
                           expires_at=expires, issued_at=issued, token=token)
        except (OSError, ValueError, KeyError, TypeError, jwt.PyJWTError):
            continue
        if svid.expires_at > now:
            found[t.name] = svid
    return found
