"""A small typed client for the bridge's gRPC API (`credential-process`, `status`, and
programs that would rather not speak protobuf).

    with BridgeClient("unix:///run/spiffe-bridge/bridge.sock") as bridge:
        creds = bridge.get_credential("etl-s3").material  # an AwsCredentials

When targets list `allowed_callers`, pass `svid=` a callable returning the caller's own
JWT-SVID (`workload_api_svid` fetches one from the local SPIRE agent); it is called per
request, so a long-lived client always sends a current SVID.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import grpc

from bridge._proto.spiffebridge.v1 import credentials_pb2 as pb
from bridge._proto.spiffebridge.v1 import credentials_pb2_grpc as pb_grpc
from bridge.clouds import CLOUDS
from bridge.errors import ApiError
from bridge.model import Material, State

_STATES = {pb.STATE_FRESH: State.FRESH, pb.STATE_STALE: State.STALE,
           pb.STATE_EXPIRED: State.EXPIRED}


@dataclass(frozen=True, slots=True)
class TargetInfo:
    name: str
    cloud: str
    state: State
    expires_at: float | None
    last_success: float | None
    last_error: str
    consecutive_failures: int


@dataclass(frozen=True, slots=True)
class ServedCredential:
    """A credential as the API serves it; `material` (the cloud's own type:
    `bridge.clouds.aws.AwsCredentials`, `bridge.clouds.gcp.GcpToken`) only while valid."""

    target: str
    state: State
    expires_at: float | None
    issued_at: float | None
    material: Material | None = None


class BridgeClient:
    def __init__(self, address: str, *, svid: Callable[[], str] | None = None,
                 timeout: float = 5.0) -> None:
        self._channel = grpc.insecure_channel(address)
        self._stub = pb_grpc.CredentialServiceStub(self._channel)
        self._svid = svid
        self._timeout = timeout

    def list_targets(self) -> list[TargetInfo]:
        response = self._call(self._stub.ListTargets, pb.ListTargetsRequest())
        return [_target(t) for t in response.targets]

    def get_credential(self, target: str) -> ServedCredential:
        response = self._call(self._stub.GetCredential, pb.GetCredentialRequest(target=target))
        return _credential(response.credential)

    def get_workload_credential(self, rule: str) -> ServedCredential:
        """On the workload socket: the calling process's own credential under the
        workload target `rule` (the bridge attests this process; nothing in the request
        names an identity)."""
        response = self._call(self._stub.GetCredential,
                              pb.GetCredentialRequest(workload_target=rule))
        return _credential(response.credential)

    def watch(self, target: str) -> Iterator[ServedCredential]:
        """The current value, then every change, until the caller stops iterating.

        The bridge ends a watch when the caller's SVID expires (authorization holds for
        every message, not just the first): with `svid=`, the stream is reopened with a
        current SVID, so a long-lived watcher renews itself. A stream refused at once
        after reopening is an error, not a loop."""
        while True:
            delivered = False
            stream = self._stub.WatchCredential(pb.WatchCredentialRequest(target=target),
                                                metadata=self._metadata())
            try:
                for response in stream:
                    delivered = True
                    yield _credential(response.credential)
                return
            except grpc.RpcError as exc:
                renew = (self._svid is not None and delivered
                         and exc.code() == grpc.StatusCode.UNAUTHENTICATED)
                if not renew:
                    raise _api_error(exc) from exc
            finally:
                stream.cancel()

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> BridgeClient:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def _call(self, method: Callable[..., Any], request: object) -> Any:
        try:
            return method(request, timeout=self._timeout, metadata=self._metadata())
        except grpc.RpcError as exc:
            raise _api_error(exc) from exc

    def _metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self._svid()}"),) if self._svid else ()


def workload_api_svid(socket: str, audience: str, *, timeout: float = 5.0) -> Callable[[], str]:
    """A `svid=` source: the caller's own JWT-SVID for `audience`, from its SPIRE agent."""
    from spiffe import WorkloadApiClient
    from spiffe.errors import PySpiffeError

    def fetch() -> str:
        try:
            with WorkloadApiClient(socket, default_timeout=timeout) as client:
                return str(client.fetch_jwt_svid({audience}, timeout=timeout).token)
        except PySpiffeError as exc:
            raise ApiError("UNAUTHENTICATED", f"cannot get this process's JWT-SVID from "
                           f"{socket}: {' '.join(str(exc).split())[:200]}") from exc
    return fetch


def _api_error(exc: grpc.RpcError) -> ApiError:
    code = exc.code() if callable(getattr(exc, "code", None)) else None
    details = exc.details() if callable(getattr(exc, "details", None)) else None
    name = code.name if isinstance(code, grpc.StatusCode) else "UNKNOWN"
    return ApiError(name, str(details or "no details"))


def _time(ts: object, present: bool) -> float | None:
    return float(ts.seconds) if present else None  # type: ignore[attr-defined]


def material_of(message: pb.Credential, expires_at: float) -> Material | None:
    """The material an API message carries, as its cloud's own type: the message's
    member `Cloud.proto_field`, whose fields are the material's, by name."""
    for cloud in CLOUDS.values():
        if message.HasField(cloud.proto_field):
            field = getattr(message, cloud.proto_field)
            values = {n: getattr(field, n) for n in field.DESCRIPTOR.fields_by_name}
            # proto3 sends "" for an unset string: leave those to the type's defaults
            material: Material = cloud.material_type(
                expires_at=expires_at, **{n: v for n, v in values.items() if v != ""})
            return material
    return None


def _target(t: pb.Target) -> TargetInfo:
    cloud = next((c.name for c in CLOUDS.values() if c.proto_cloud == t.cloud), "unknown")
    return TargetInfo(name=t.name, cloud=cloud, state=_STATES.get(t.state, State.EXPIRED),
                      expires_at=_time(t.expires_at, t.HasField("expires_at")),
                      last_success=_time(t.last_success, t.HasField("last_success")),
                      last_error=t.last_error, consecutive_failures=t.consecutive_failures)


def _credential(c: pb.Credential) -> ServedCredential:
    expires_at = _time(c.expires_at, c.HasField("expires_at"))
    material = material_of(c, expires_at) if expires_at is not None else None
    return ServedCredential(target=c.target, state=_STATES.get(c.state, State.EXPIRED),
                            expires_at=expires_at,
                            issued_at=_time(c.issued_at, c.HasField("issued_at")),
                            material=material)
