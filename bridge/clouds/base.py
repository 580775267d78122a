"""What a cloud brings to the bridge, behind one small protocol.

The engine (config loader, chain planner, refresh, outputs, serving) never asks which
cloud a target is: it asks the target's `Cloud`, found by its hops' `cloud` name in the
registry (`bridge.clouds.CLOUDS`). A cloud brings

- its config keys: the target's `<cloud>:` section and `chain:` hops (`read_section`,
  `read_hop`) and its share of the chain rules (`link`, `mint_problem`, `hop_problems`);
- its hops (`session(...).build`), blocking calls that run in worker threads and raise
  `ExchangeError` classified at their own edge;
- its SDKs' refresh window (`min_remaining`): what it hands out always has that left;
- its files in the credential directory (`files`, `shared_files`, `recover`);
- its gRPC material (`proto_field`: a message whose fields are its material's, by name)
  and its metadata endpoints (`endpoints`).

Everything here is a value or a protocol; nothing imports an SDK. A cloud imports its
SDKs only when a target of it is wired, so a config without it never pays for them.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Protocol, runtime_checkable

from bridge.errors import ExchangeError
from bridge.model import Credential, Material
from bridge.outputs.files import SharedFile, TargetFile
from bridge.schema import Section
from bridge.skew import ClockSkew

if TYPE_CHECKING:
    from bridge.serving import Service
    from bridge.serving.metadata import MetadataContext


class HopConfig(Protocol):
    """One configured hop: a target's `<cloud>:` section, or one `chain:` element."""

    cloud: ClassVar[str]  # the registry key of the cloud that reads and runs it

    @property
    def audience(self) -> str:
        """The JWT audience this hop wants when it is fed a token (an SVID or an ID
        token minted by the hop before it)."""
        ...


class Target(Protocol):
    """What a cloud needs to know of a configured target (`config.TargetConfig`)."""

    @property
    def name(self) -> str: ...

    @property
    def hops(self) -> tuple[HopConfig, ...]: ...

    @property
    def final(self) -> HopConfig: ...

    @property
    def jwt_file(self) -> bool: ...

    @property
    def serve(self) -> tuple[str, ...]: ...

    @property
    def allowed_callers(self) -> tuple[str, ...]: ...


class Link(enum.Enum):
    """How a hop is fed by what comes before it."""

    SVID = "svid"      # the first hop: the JWT-SVID
    X509 = "x509"      # the first hop of a `source: x509` target: the X.509-SVID
    NATIVE = "native"  # the previous hop's own material (an AWS session for AssumeRole)
    TOKEN = "token"  # noqa: S105 - an ID token the previous hop mints for this audience


@dataclass(frozen=True, slots=True)
class LinkProblem:
    """The rule that forbids a hop after the one before; `key` is the hop's own key at
    fault (`duration`), when one is, so the config check names it."""

    message: str
    key: str | None = None


@dataclass(frozen=True, slots=True)
class Quota:
    """The published request quota a hop's calls count against (PROTOCOLS.md §11).

    `scope` is what shares it, in bounded words (a metric label, never an ARN):
    `aws_sts 111122223333 us-east-1`, `gcp_sts 123456`; for clouds still to come,
    `rolesanywhere <account> <region>` (CreateSession, 10/s) or `entra <tenant id>` (no
    published rate: a conservative one, and its 429 `Retry-After` is honoured). `rate` is
    what the whole scope may make per second, every bridge of a fleet together; `source`
    names the page it is published on.
    """

    scope: str
    rate: float
    source: str


DEFAULT_QUOTA_RATE = 100.0  # req/s for a hop that names no quota: one scope per endpoint


def quota_of(hop: Hop) -> Quota:
    """A hop's quota: its `quota` attribute when it has one (optional in `Hop`, so a cloud
    added later fills it in when it can), else one scope per endpoint (`hop.scope`) at
    `DEFAULT_QUOTA_RATE`."""
    quota = getattr(hop, "quota", None)
    if isinstance(quota, Quota):
        return quota
    return Quota(scope=hop.scope, rate=DEFAULT_QUOTA_RATE, source="default")


SOURCES = ("jwt", "x509")  # a target's `source`: which SVID its first hop is fed


@runtime_checkable
class SourceRules(Protocol):
    """A cloud whose first hops say which SVID kinds they take (`source`). A cloud
    without it takes JWT-SVIDs only."""

    def source_problem(self, hop: HopConfig, source: str) -> str | None:
        """Why `hop` cannot be a first hop fed by `source` (jwt, x509), or None."""
        ...


class Hop(Protocol):
    """A runtime hop: blocking (the SDKs are), run in a worker thread.

    A hop may also carry `quota: Quota` (the quota scope its calls count against, see
    `quota_of`); without it the endpoint (`scope`) is the quota scope.
    """

    name: str  # bounded: a metric label (aws_web_identity, aws_assume_role, gcp_sts, ...)
    scope: str  # the remote endpoint it calls: concurrency is bounded per scope
    judge: str  # whose clock judges the token fed to it (a `ClockSkew` service name)

    def exchange(self, material: Material) -> Material: ...


class CloudSession(Protocol):
    """One daemon generation's runtime for one cloud: its SDK clients and pools, made
    in the assembly and shared by that cloud's hops (never module-level state)."""

    def build(self, hop: HopConfig, *, link: Link,
              earlier: Sequence[HopConfig]) -> list[Hop]:
        """The runtime hops for `hop` fed as `link`; `earlier` are the hops before it."""
        ...

    def mint(self, hop: HopConfig, *, audience: str) -> list[Hop]:
        """Hops turning `hop`'s material into an ID token for `audience` (Link.TOKEN)."""
        ...


@dataclass(frozen=True, slots=True)
class HopContext:
    """What every cloud session is built with."""

    timeout: float
    skew: ClockSkew | None = None
    now: Callable[[], float] = time.time  # the wall clock answers are timed against


class Endpoint(Protocol):
    """A cloud-metadata endpoint a cloud emulates (`metadata.<key>`, `serve: [<key>]`)."""

    key: str      # the config key and the `serve` word: container, imds, gce
    single: bool  # serves one identity (IMDS, GCE) rather than one per target

    def read(self, section: Section, *, directory: str) -> object | None:
        """Its `metadata.<key>` section (None when the section is unusable)."""
        ...

    def serve_problem(self, target: Target) -> str | None:
        """Why `target` cannot be served here, or None."""
        ...

    def exposure(self, config: object, targets: Sequence[str]) -> str:
        """One line for `check`: what the listener hands out (`targets`), to whom."""
        ...

    def build(self, config: object, targets: Sequence[Target],
              context: MetadataContext) -> Service:
        """The listener for `config` (what `read` returned) serving `targets`."""
        ...


class Cloud(Protocol):
    """One cloud, as the engine sees it (see the module docstring)."""

    name: str             # config key, output subdirectory, what `status` shows
    title: str            # how messages name it: AWS, GCP
    proto_cloud: int      # its `spiffebridge.v1.Cloud` value
    proto_field: str      # its member of `Credential.material`; the message's fields are
    material_type: type   # ... those of this dataclass that the message has, by name
    min_remaining: float  # its SDKs refresh inside this window: never hand out less
    endpoints: tuple[Endpoint, ...]
    output_kinds: tuple[str, ...]  # metric labels of its files

    def read_section(self, section: Section) -> list[HopConfig | None]:
        """A target's `<cloud>:` section: its first hop, then any hops the section's
        own shorthand adds (None for a hop with problems, which are recorded)."""
        ...

    def read_hop(self, section: Section) -> HopConfig | None:
        """The `<cloud>:` section of one `chain:` element."""
        ...

    def link(self, prev: HopConfig | None, hop: HopConfig) -> Link | LinkProblem:
        """How `hop` (of this cloud) is fed after `prev`, or the rule that forbids it."""
        ...

    def mint_problem(self, hop: HopConfig, *, audience: str = "") -> str | None:
        """Why a hop after `hop` (of this cloud) cannot be fed an ID token minted by it
        for `audience` (the next hop's), completing "an X hop after <title> ...", or
        None."""
        ...

    def hop_problems(self, hop: HopConfig, *, position: int,
                     jwt_file: bool) -> list[tuple[str, str]]:
        """Target-level rules for `hop` at `position` (0 = first): (key, message)."""
        ...

    def jwt_file_min_remaining(self, hop: HopConfig) -> float:
        """What the target's `jwt/<t>.jwt` must always keep when `hop` (of this cloud)
        is first: a reader that caches the file needs more than the engine's 30 s
        (azure-identity's 600 s); 0 for no more."""
        ...

    def session(self, context: HopContext) -> CloudSession: ...

    def files(self, target: Target, directory: Path) -> list[TargetFile]:
        """The files of one target whose final hop is this cloud's."""
        ...

    def shared_files(self, targets: Sequence[Target]) -> list[SharedFile]:
        """Files shared by every target of this cloud (`aws/credentials`)."""
        ...

    def recover(self, directory: Path, target: Target, *, now: float,
                mono: float) -> Credential | None:
        """A still-valid credential a previous run left in `directory`, if any."""
        ...



def wrong_input(hop: str, material: object) -> ExchangeError:
    """A chain wired in an order the chain rules should have refused."""
    return ExchangeError(f"cannot take {type(material).__name__} as input", hop=hop,
                         code="BadChain", retryable=False, reason="config")

