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
import stat
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypeVar

import jwt

from bridge.errors import OutputError
from bridge.model import Credential, JwtSvid, TargetStatus
from bridge.outputs import atomic
from bridge.outputs.files import SharedFile, TargetFile
from bridge.x509_svid import X509Svid

log = logging.getLogger(__name__)
T = TypeVar("T")
JWT_OUTPUT = "jwt"
X509_OUTPUT = "x509"  # opt-in X.509-SVID files (`x509_files: true`), like spiffe-helper's
X509_FILES = (".pem", ".key.pem", ".bundle.pem")  # chain, private key, trust bundle
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
    targets: frozenset[str] = frozenset()  # whose files are behind (empty: all of them)


INFINITY = float("inf")  # the deadline of content without one (static files)


class CredentialDirectory:
    """Owns the output directory: prepares it once, then mirrors the store into it.

    It remembers, per file, the monotonic deadline of what it holds on disk. When a
    write fails (disk full, read-only) the previous file stays only while its own
    content is valid: past that deadline it is removed (unlinking needs no space), so a
    failing disk can delay new credentials but never leave an expired one readable.
    """

    name = "files"

    def __init__(self, directory: Path, *, allow_non_tmpfs: bool,
                 files: Mapping[str, Sequence[TargetFile]] | None = None,
                 shared: Sequence[SharedFile] = (), jwt_targets: Iterable[str] = (),
                 subdirs: Sequence[str] = (), x509_targets: Iterable[str] = ()) -> None:
        self.directory = directory
        self._allow_non_tmpfs = allow_non_tmpfs
        self._jwt_targets = tuple(sorted(jwt_targets))
        self._x509_targets = tuple(sorted(x509_targets))
        self._subdirs = tuple(dict.fromkeys([*subdirs, JWT_OUTPUT, X509_OUTPUT]))
        # subdirectory -> ((target, file), ...) and its shared files, in writing order
        self._files: dict[str, list[tuple[str, TargetFile]]] = {}
        for target, target_files in sorted((files or {}).items()):
            for f in target_files:
                self._files.setdefault(_subdir_of(f.path), []).append((target, f))
        self._shared: dict[str, list[SharedFile]] = {}
        for sf in shared:
            self._shared.setdefault(_subdir_of(sf.path), []).append(sf)
        # key -> (digest, deadline) of what the file holds on disk now
        self._on_disk: dict[str, tuple[str, float]] = {}
        # key -> (the immutable value rendered, its bytes, their digest): a pass renders
        # and hashes only what changed since the last one (1,000 targets: one pass per
        # refresh burst would otherwise re-render every file).
        self._rendered: dict[str, tuple[object, bytes, str]] = {}

    def next_deadline(self, now: float) -> float | None:
        """The earliest future deadline of content on disk (the writer wakes then)."""
        future = [d for _, d in self._on_disk.values() if now < d < INFINITY]
        return min(future) if future else None

    def expected(self) -> frozenset[str]:
        """Every path this directory may hold (the rest is a removed target's)."""
        paths = {f.path for files in self._files.values() for _, f in files}
        paths |= {sf.path for shared in self._shared.values() for sf in shared}
        paths |= {f"{JWT_OUTPUT}/{name}.jwt" for name in self._jwt_targets}
        paths |= {f"{X509_OUTPUT}/{name}{ext}" for name in self._x509_targets
                  for ext in X509_FILES}
        return frozenset(paths)

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
        if problem := atomic.trust_problem(d):
            raise OutputError(f"refusing the output directory: {problem}", reason="untrusted")
        try:
            return self._prepare_checked(d)
        except OSError as exc:  # e.g. EPERM on a directory we may not chmod: one line
            raise OutputError(f"cannot prepare {d}: {exc.strerror}",
                              reason=atomic.os_error_reason(exc)) from exc

    def _prepare_checked(self, d: Path) -> int:
        if not self._allow_non_tmpfs and not atomic.is_memory_backed(d):
            raise OutputError(
                f"{d} is not on tmpfs/ramfs ({atomic.filesystem_type(d) or 'unknown'}); "
                "credentials would reach a disk. Use a tmpfs directory or set "
                "outputs.allow_non_tmpfs: true", reason="not_tmpfs")
        removed = 0
        with atomic.open_dir(d) as root:
            os.fchmod(root, atomic.DIR_MODE)
            removed += atomic.sweep_temp_files(root)
            expected = self.expected()
            for sub in self._subdirs:
                atomic.ensure_dir(root, sub)
                with self._subdir(root, sub) as fd:
                    removed += atomic.sweep_temp_files(fd)
                    self._sweep_orphans(fd, sub, expected)
            atomic.write_file(root, ".probe", b"")
            atomic.remove_file(root, ".probe")
        if removed:
            log.info("removed %d stale temp file(s) from %s", removed, d)
        return removed

    @staticmethod
    def _sweep_orphans(fd: int, sub: str, expected: frozenset[str]) -> None:
        """Remove the files of targets no longer configured (a reload or a restart with
        another config): their credentials must not outlive their target, nor be read
        by a reader that still looks for them."""
        for entry in os.listdir(fd):
            if entry.startswith(".") or f"{sub}/{entry}" in expected:
                continue
            try:
                if stat.S_ISREG(os.stat(entry, dir_fd=fd, follow_symlinks=False).st_mode):
                    os.unlink(entry, dir_fd=fd)
                    log.info("removed %s/%s: no configured target writes it", sub, entry)
            except OSError:
                continue

    def apply(self, statuses: Mapping[str, TargetStatus], now: float) -> list[OutputFailure]:
        """Mirror `statuses` into files at monotonic `now`; return what failed (a file
        whose content is still valid stays; one past its deadline is removed)."""
        failures: list[OutputFailure] = []
        try:
            with atomic.open_dir(self.directory) as root:
                self._check_open(root)
                os.fchmod(root, atomic.DIR_MODE)
                for sub in dict.fromkeys([*self._files, *self._shared]):
                    failures += self._apply_subdir(root, sub, statuses, now)
                failures += self._apply_jwt(root, statuses, now)
                failures += self._apply_x509(root, statuses, now)
        except OutputError as exc:
            failures.append(OutputFailure(DIRECTORY_OUTPUT, exc))
        except OSError as exc:
            failures.append(OutputFailure(DIRECTORY_OUTPUT, OutputError(
                f"{self.directory}: {exc.strerror}", retryable=True,
                reason=atomic.os_error_reason(exc))))
        return failures

    def _check_open(self, root: int) -> None:
        """What `prepare` checked by path, checked again on the directory actually open:
        a symlinked parent re-pointed at run time must not send a write to a disk or into
        a directory someone else owns."""
        st = os.fstat(root)
        if st.st_uid != os.geteuid():
            raise OutputError(f"{self.directory} is now owned by uid {st.st_uid}; not "
                              "writing into it", reason="untrusted")
        if not self._allow_non_tmpfs and not atomic.is_fd_memory_backed(root):
            raise OutputError(
                f"{self.directory} is now on {atomic.fd_filesystem_type(root) or 'unknown'}, "
                "not tmpfs/ramfs (a parent re-pointed?); not writing credentials to disk",
                reason="not_tmpfs")

    def _apply_subdir(self, root: int, sub: str, statuses: Mapping[str, TargetStatus],
                      now: float) -> list[OutputFailure]:
        failures: list[OutputFailure] = []
        atomic.ensure_dir(root, sub)
        with self._subdir(root, sub) as fd:
            pass_ = _Pass(fd, _listing(fd), now, failures)
            for target, f in self._files.get(sub, ()):
                if f.static is not None:
                    self._sync(pass_, f.path, _digested(f.static), INFINITY, output=f.output,
                               targets=frozenset({target}))
                    continue
                cred = _valid(statuses, target, now)
                rendered = self._render(f.path, cred, f.render) if (
                    cred is not None and f.render is not None) else None
                self._sync(pass_, f.path, rendered, cred.deadline if cred else INFINITY,
                           output=f.output, targets=frozenset({target}))
            for sf in self._shared.get(sub, ()):
                creds = [c for t in sorted(sf.targets) if (c := _valid(statuses, t, now))]
                # Not created before there is something to put in it, so "the file
                # exists" means "something in it is ready"; once it exists it is kept
                # in step (expired entries are dropped from it).
                if creds or sf.path.split("/", 1)[1] in pass_.present:
                    deadline = min((c.deadline for c in creds), default=INFINITY)
                    self._sync(pass_, sf.path, _digested(sf.render(creds)), deadline,
                               output=sf.output, targets=sf.targets)
        return failures

    def _apply_jwt(self, root: int, statuses: Mapping[str, TargetStatus],
                   now: float) -> list[OutputFailure]:
        failures: list[OutputFailure] = []
        if not self._jwt_targets:
            return failures
        atomic.ensure_dir(root, JWT_OUTPUT)
        with self._subdir(root, JWT_OUTPUT) as fd:
            pass_ = _Pass(fd, _listing(fd), now, failures)
            for name in self._jwt_targets:
                status = statuses.get(name)
                svid = status.svid if status else None
                live = svid is not None and svid.deadline > now
                data = svid.token.encode() if svid is not None and live else None
                self._sync(pass_, f"{JWT_OUTPUT}/{name}.jwt", _digested(data),
                           svid.deadline if svid is not None else INFINITY, output=JWT_OUTPUT,
                           targets=frozenset({name}))
        return failures

    def _apply_x509(self, root: int, statuses: Mapping[str, TargetStatus],
                    now: float) -> list[OutputFailure]:
        """The X.509-SVID a target's credential was last made with: chain, key, bundle
        (the key reaches a file only here, and only when the target asks for it)."""
        failures: list[OutputFailure] = []
        if not self._x509_targets:
            return failures
        atomic.ensure_dir(root, X509_OUTPUT)
        with self._subdir(root, X509_OUTPUT) as fd:
            pass_ = _Pass(fd, _listing(fd), now, failures)
            for name in self._x509_targets:
                status = statuses.get(name)
                svid = status.svid if status else None
                live = isinstance(svid, X509Svid) and svid.deadline > now
                deadline = svid.deadline if isinstance(svid, X509Svid) else INFINITY
                for ext, part in zip(X509_FILES, ("chain", "key", "bundle"), strict=True):
                    key = f"{X509_OUTPUT}/{name}{ext}"
                    rendered = self._render(key, svid, _X509_PARTS[part]) if (
                        live and isinstance(svid, X509Svid)) else None
                    self._sync(pass_, key, rendered, deadline, output=X509_OUTPUT,
                               targets=frozenset({name}))
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

    def _sync(self, p: _Pass, key: str, rendered: tuple[bytes, str] | None,
              deadline: float, *, output: str, targets: frozenset[str]) -> None:
        """Make file `key` hold `rendered` (bytes, digest; valid until `deadline`), or be
        absent for None. On a failed write the old file stays only while its own content
        is valid."""
        name = key.split("/", 1)[1]
        held = self._on_disk.get(key)
        if rendered is None:
            self._rendered.pop(key, None)
            if name not in p.present:  # nothing to remove
                self._on_disk.pop(key, None)
                return
        elif name in p.present and (held or self._adopt(p, key, name, rendered, deadline)
                                    )[0] == rendered[1]:
            self._on_disk[key] = (rendered[1], deadline)
            return  # unchanged and still there
        try:
            if rendered is None:
                atomic.remove_file(p.fd, name)
            else:
                atomic.write_file(p.fd, name, rendered[0])
        except OutputError as exc:
            p.failures.append(OutputFailure(output, exc, targets))
            on_disk = self._on_disk.get(key)
            if name in p.present and (on_disk is None or on_disk[1] <= p.now):
                self._remove_stale(p, key, name, output, targets)
            return
        if rendered is None:
            self._on_disk.pop(key, None)
        else:
            self._on_disk[key] = (rendered[1], deadline)

    def _adopt(self, p: _Pass, key: str, name: str, rendered: tuple[bytes, str],
               deadline: float) -> tuple[str, float]:
        """A file this process has not written (a previous run's): the same bytes as
        `rendered` count as written; anything else is unknown (`""`, already due)."""
        same = atomic.read_file(p.fd, name, limit=len(rendered[0]) + 1) == rendered[0]
        held = (rendered[1], deadline) if same else ("", -INFINITY)
        self._on_disk[key] = held
        return held

    def _remove_stale(self, p: _Pass, key: str, name: str, output: str,
                      targets: frozenset[str]) -> None:
        """The write failed and what the file holds is past its deadline (or unknown):
        it must not be read any more. Only a regular file is ours to remove: something
        else planted there is refused and reported, and left for the operator to see."""
        try:
            if not stat.S_ISREG(os.stat(name, dir_fd=p.fd, follow_symlinks=False).st_mode):
                return
        except OSError:
            return
        try:
            atomic.remove_file(p.fd, name)
        except OutputError as exc:
            p.failures.append(OutputFailure(output, exc, targets))
            return
        self._on_disk.pop(key, None)
        log.warning("removed %s: the new version could not be written and the old one "
                    "has expired", key)

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


@dataclass(slots=True)
class _Pass:
    """One subdirectory's share of an `apply`: its fd, its listing, the time, failures."""

    fd: int
    present: frozenset[str]
    now: float
    failures: list[OutputFailure]


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


_X509_PARTS: dict[str, Callable[[X509Svid], bytes]] = {
    "chain": X509Svid.chain_pem, "key": X509Svid.key_pem, "bundle": X509Svid.bundle_pem}


def recover_svids(directory: Path, targets: Iterable[JwtFileTarget], now: float,
                  mono: float) -> dict[str, JwtSvid]:
    """JWT-SVID files a previous run wrote that are still unexpired: kept in place (and
    served) while the agent is unreachable after a restart, like the credentials. Their
    `exp` is judged by this host's clock (`now`): nothing better is known at start."""
    found: dict[str, JwtSvid] = {}
    for t in targets:
        if not t.jwt_file:
            continue
        try:
            token = atomic.read_regular(directory / "jwt" / f"{t.name}.jwt",
                                        limit=64 * 1024).decode().strip()
            claims = jwt.decode(token, options={"verify_signature": False})
            expires, issued = float(claims["exp"]), float(claims.get("iat", now))
            svid = JwtSvid(spiffe_id=str(claims["sub"]), audience=t.audience,
                           expires_at=expires, issued_at=issued, token=token,
                           deadline=mono + expires - now)
        except (OSError, ValueError, KeyError, TypeError, jwt.PyJWTError):
            continue  # absent, not a regular file (a FIFO), unreadable or not a JWT
        if svid.expires_at > now:
            found[t.name] = svid
    return found
