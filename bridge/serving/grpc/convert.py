"""Store values to API messages and back. A message carries material only while the
credential is valid at `now`; an expired target is described, never handed out.

A cloud's material travels in its member of `Credential.material` (`Cloud.proto_field`),
a message whose fields are the material's own, by name: what the message does not have
(an AWS session's region, a federated token kept for a next hop) never leaves."""

from __future__ import annotations

from dataclasses import dataclass

from google.protobuf.timestamp_pb2 import Timestamp

from bridge._proto.spiffebridge.v1 import credentials_pb2 as pb
from bridge.model import State, TargetStatus


@dataclass(frozen=True, slots=True)
class ServedTarget:
    """A target as the API serves it: who may read it, and how its cloud's material
    travels (`Cloud.proto_cloud`, `Cloud.proto_field`), wired by the assembly."""

    name: str
    allowed_callers: tuple[str, ...]
    proto_cloud: int
    proto_field: str


_STATES = {State.FRESH: pb.STATE_FRESH, State.STALE: pb.STATE_STALE,
           State.EXPIRED: pb.STATE_EXPIRED}


def target_message(config: ServedTarget, status: TargetStatus, now: float) -> pb.Target:
    valid = status.valid_credential(now)
    message = pb.Target(
        name=config.name,
        cloud=config.proto_cloud,  # type: ignore[arg-type]
        state=_STATES[status.served_state(now)],
        last_error=status.last_error or "",
        consecutive_failures=status.consecutive_failures)
    if valid is not None:
        message.expires_at.CopyFrom(_ts(valid.expires_at))
    if status.last_success is not None:
        message.last_success.CopyFrom(_ts(status.last_success))
    return message


def credential_message(config: ServedTarget, status: TargetStatus, now: float
                       ) -> pb.Credential:
    valid = status.valid_credential(now)
    message = pb.Credential(target=status.name, state=_STATES[status.served_state(now)])
    if valid is None:
        return message
    message.expires_at.CopyFrom(_ts(valid.expires_at))
    message.issued_at.CopyFrom(_ts(valid.issued_at))
    field = getattr(message, config.proto_field)
    for name in field.DESCRIPTOR.fields_by_name:
        setattr(field, name, getattr(valid.material, name))
    return message


def _ts(epoch: float) -> Timestamp:
    ts = Timestamp()
    ts.FromSeconds(int(epoch))
    return ts
