"""The credential directory: AWS shared-credentials INI, credential_process JSON, JWT files.

Layout (DESIGN.md): `aws/credentials` (a profile per AWS target), `aws/<target>.json`,
`jwt/<target>.jwt` (opt-in). Only credentials still valid are written; an expired one
is removed, so no reader can pick it up. Unchanged files are not rewritten.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import jwt

from bridge.config import AwsTarget, GcpTarget, TargetConfig
from bridge.errors import OutputError
from bridge.model import (
    AwsCredentials,
    Credential,
    GcpToken,
    JwtSvid,
    TargetStatus,
    parse_utc_iso,
    utc_iso,
)
from bridge.outputs import atomic

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class OutputFailure:
    output: str  # bounded label: aws_credentials | aws_process | gcp_token | gcp_json | jwt
    error: OutputError


def process_json(aws: AwsCredentials, expires_at: float) -> dict[str, object]:
    """AWS `credential_process` output (Version 1, with Expiration so SDKs refresh)."""
    return {"Version": 1, "AccessKeyId": aws.access_key_id,
            "SecretAccessKey": aws.secret_access_key, "SessionToken": aws.session_token,
            "Expiration": utc_iso(expires_at)}


def render_process_json(cred: Credential) -> bytes:
    """`aws/<target>.json`: the target's `process_json`, expiring with its whole chain."""
    assert cred.aws is not None
    return json.dumps(process_json(cred.aws, cred.expires_at), indent=2).encode()


_INI_HEADER = "# Written by spiffe-bridge; rewritten on every refresh. Do not edit.\n"


def render_credentials_ini(creds: Iterable[Credential],
                           section: Callable[[Credential], str] | None = None) -> bytes:
    """The shared-credentials file: one `[profile]` per AWS target, named after it."""
    render = section or _ini_section
    sections = [render(c) for c in sorted(creds, key=lambda c: c.target) if c.aws is not None]
    return (_INI_HEADER + "".join(sections)).encode()


def _ini_section(c: Credential) -> str:
    assert c.aws is not None
    return (f"\n[{c.target}]\n# expires {utc_iso(c.expires_at)}\n"
            f"aws_access_key_id = {c.aws.access_key_id}\n"
            f"aws_secret_access_key = {c.aws.secret_access_key}\n"
            f"aws_session_token = {c.aws.session_token}\n")


def render_gcp_json(cred: Credential) -> bytes:
    """`gcp/<target>.json`: token, type and RFC 3339 expiry (google-auth's own parse format)."""
    g = cred.gcp
    assert g is not None
    doc = {"token": g.access_token, "token_type": g.token_type,
           "expiry": utc_iso(cred.expires_at), "principal": g.principal}
    return json.dumps(doc, indent=2).encode()


def render_external_account(gcp: GcpTarget, jwt_path: Path) -> bytes:
    """An `external_account` config: Google SDKs exchange the JWT-SVID file themselves."""
    from bridge.exchangers.gcp import JWT_TOKEN_TYPE  # deferred: google-auth, ~40 ms

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


class CredentialDirectory:
    """Owns the output directory: prepares it once, then mirrors the store into it."""

    name = "files"

    def __init__(self, directory: Path, *, allow_non_tmpfs: bool,
                 targets: Iterable[TargetConfig]) -> None:
        self.directory = directory
        self._allow_non_tmpfs = allow_non_tmpfs
        targets = list(targets)
        self._jwt_targets = frozenset(t.name for t in targets if t.jwt_file)
        self._aws_targets = frozenset(t.name for t in targets if isinstance(t.final, AwsTarget))
        self._gcp_targets = frozenset(t.name for t in targets if isinstance(t.final, GcpTarget))
        self._external = {t.name: t.gcp for t in targets
                          if t.gcp is not None and t.gcp.external_account_file}
        self._written: dict[str, str] = {}
        # key -> (the immutable value rendered, its bytes, their digest): a pass renders
        # and hashes only what changed since the last one (1,000 targets: one pass per
        # refresh burst would otherwise re-render every file).
        self._rendered: dict[str, tuple[object, bytes, str]] = {}
        self._sections: dict[str, tuple[Credential, str]] = {}

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
                                  reason="permission") from None
        if not self._allow_non_tmpfs and not atomic.is_memory_backed(d):
            raise OutputError(
                f"{d} is not on tmpfs/ramfs ({atomic.filesystem_type(d) or 'unknown'}); "
                "credentials would reach a disk. Use a tmpfs directory or set "
                "outputs.allow_non_tmpfs: true", reason="not_tmpfs")
        removed = 0
        with atomic.open_dir(d) as root:
            os.fchmod(root, atomic.DIR_MODE)
            removed += atomic.sweep_temp_files(root)
            for sub in ("aws", "gcp", "jwt"):
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
                failures += self._apply_aws(root, statuses, now)
                failures += self._apply_gcp(root, statuses, now)
                failures += self._apply_jwt(root, statuses, now)
        except OutputError as exc:
            failures.append(OutputFailure("directory", exc))
        except OSError as exc:
            failures.append(OutputFailure("directory", OutputError(
                f"{self.directory}: {exc.strerror}", retryable=True,
                reason=atomic.os_error_reason(exc))))
        return failures

    def _apply_aws(self, root: int, statuses: Mapping[str, TargetStatus],
                   now: float) -> list[OutputFailure]:
        failures: list[OutputFailure] = []
        valid: list[Credential] = []
        atomic.ensure_dir(root, "aws")
        with self._subdir(root, "aws") as fd:
            present = _listing(fd)
            for name in sorted(self._aws_targets):
                status = statuses.get(name)
                cred = status.valid_credential(now) if status else None
                if cred is not None:
                    valid.append(cred)
                key = f"aws/{name}.json"
                self._sync(fd, present, key, f"{name}.json",
                           self._render(key, cred, render_process_json) if cred else None,
                           output="aws_process", failures=failures)
            # Not created before there is something to put in it, so "the file exists"
            # means "a profile is ready"; once it exists it is kept in step (expired
            # profiles are dropped from it).
            if self._aws_targets and (valid or "credentials" in present):
                self._sync(fd, present, "aws/credentials", "credentials",
                           _digested(render_credentials_ini(valid, self._ini_section)),
                           output="aws_credentials", failures=failures)
        return failures

    def _apply_gcp(self, root: int, statuses: Mapping[str, TargetStatus],
                   now: float) -> list[OutputFailure]:
        failures: list[OutputFailure] = []
        if not self._gcp_targets:
            return failures
        atomic.ensure_dir(root, "gcp")
        with self._subdir(root, "gcp") as fd:
            present = _listing(fd)
            for name in sorted(self._gcp_targets):
                status = statuses.get(name)
                cred = status.valid_credential(now) if status else None
                usable = cred if cred and cred.gcp else None
                key = f"gcp/{name}.token"
                self._sync(fd, present, key, f"{name}.token",
                           self._render(key, usable, _gcp_token) if usable else None,
                           output="gcp_token", failures=failures)
                key = f"gcp/{name}.json"
                self._sync(fd, present, key, f"{name}.json",
                           self._render(key, usable, render_gcp_json) if usable else None,
                           output="gcp_json", failures=failures)
            for name, gcp in sorted(self._external.items()):
                jwt_path = self.directory / "jwt" / f"{name}.jwt"
                self._sync(fd, present, f"gcp/{name}.external_account.json",
                           f"{name}.external_account.json",
                           _digested(render_external_account(gcp, jwt_path)),
                           output="gcp_external_account", failures=failures)
        return failures

    def _apply_jwt(self, root: int, statuses: Mapping[str, TargetStatus],
                   now: float) -> list[OutputFailure]:
        failures: list[OutputFailure] = []
        if not self._jwt_targets:
            return failures
        atomic.ensure_dir(root, "jwt")
        with self._subdir(root, "jwt") as fd:
            present = _listing(fd)
            for name in sorted(self._jwt_targets):
                status = statuses.get(name)
                svid = status.svid if status else None
                data = svid.token.encode() if svid and svid.expires_at > now else None
                self._sync(fd, present, f"jwt/{name}.jwt", f"{name}.jwt", _digested(data),
                           output="jwt", failures=failures)
        return failures

    def _ini_section(self, cred: Credential) -> str:
        """One profile of `aws/credentials`, formatted once per credential."""
        key = f"aws/credentials[{cred.target}]"
        hit = self._sections.get(key)
        if hit is None or hit[0] is not cred:
            hit = self._sections[key] = (cred, _ini_section(cred))
        return hit[1]

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
                              reason="symlink") from None
        return self._fd

    def __exit__(self, *_: object) -> None:
        os.close(self._fd)


def _digested(data: bytes | None) -> tuple[bytes, str] | None:
    return None if data is None else (data, hashlib.sha256(data).hexdigest())


def _gcp_token(cred: Credential) -> bytes:
    assert cred.gcp is not None
    return cred.gcp.access_token.encode()


def _listing(fd: int) -> frozenset[str]:
    """Names in an open directory: one syscall per pass instead of a stat per file."""
    return frozenset(os.listdir(fd))


def recover(directory: Path, targets: Iterable[TargetConfig], now: float
            ) -> dict[str, Credential]:
    """Credentials a previous run left in the directory that are still valid.

    A restart must not throw away good credentials: they are served (as stale) until
    the first refresh replaces them or they expire. Unreadable or expired files are
    ignored; the first write pass replaces or removes them.
    """
    found: dict[str, Credential] = {}
    for t in targets:
        try:
            if isinstance(t.final, AwsTarget):
                doc = read_process_json(directory, t.name)
                expires = parse_utc_iso(doc["Expiration"])
                aws = AwsCredentials(access_key_id=str(doc["AccessKeyId"]),
                                     secret_access_key=str(doc["SecretAccessKey"]),
                                     session_token=str(doc["SessionToken"]),
                                     expires_at=expires)
                cred = Credential(target=t.name, issued_at=now, expires_at=expires,
                                  svid_expires_at=0.0, aws=aws)
            else:
                doc = json.loads((directory / "gcp" / f"{t.name}.json").read_text())
                expires = parse_utc_iso(doc["expiry"])
                gcp = GcpToken(access_token=str(doc["token"]), expires_at=expires,
                               principal=str(doc.get("principal", "")))
                cred = Credential(target=t.name, issued_at=now, expires_at=expires,
                                  svid_expires_at=0.0, gcp=gcp)
        except (OutputError, OSError, ValueError, KeyError, TypeError):
            continue
        if cred.expires_at > now:
            found[t.name] = cred
    return found


def recover_svids(directory: Path, targets: Iterable[TargetConfig], now: float
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


def read_process_json(directory: Path, target: str) -> dict[str, object]:
    """Read `aws/<target>.json` back (for `credential-process` without a daemon)."""
    path = directory / "aws" / f"{target}.json"
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise OutputError(f"no credentials for target {target!r} at {path} "
                          "(is the daemon running, and is the target healthy?)",
                          reason="missing") from None
    except (OSError, ValueError) as exc:
        raise OutputError(f"cannot read {path}: {exc}", reason="io_error") from None
    if not isinstance(data, dict):
        raise OutputError(f"{path} is not a JSON object", reason="io_error")
    return data
