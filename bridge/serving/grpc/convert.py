"""Store values to API messages. A message carries material only while the credential
is valid at `now`; an expired target is described, never handed out."""

from __future__ import annotations

from google.protobuf.timestamp_pb2 import Timestamp

from bridge._proto.spiffebridge.v1 import credentials_pb2 as pb
from bridge.clouds import cloud_of
from bridge.config import TargetConfig
from bridge.model import State, TargetStatus

_STATES = {State.FRESH: pb.STATE_FRESH, State.STALE: pb.STATE_STALE,
           State.EXPIRED: pb.STATE_EXPIRED}


def target_message(config: TargetConfig, status: TargetStatus, now: float) -> pb.Target:
    valid = status.valid_credential(now)
    message = pb.Target(
        name=config.name,
        cloud=cloud_of(config.final).proto_cloud,  # type: ignore[arg-type]
        state=_STATES[status.served_state(now)],
        last_error=status.last_error or "",
        consecutive_failures=status.consecutive_failures)
    if valid is not None:
        message.expires_at.CopyFrom(_ts(valid.expires_at))
    if status.last_success is not None:
        message.last_success.CopyFrom(_ts(status.last_success))
    return message


def credential_message(config: TargetConfig, status: TargetStatus, now: float
                       ) -> pb.Credential:
    valid = status.valid_credential(now)
    message = pb.Credential(target=status.name, state=_STATES[status.served_state(now)])
    if valid is None:
        return message
    message.expires_at.CopyFrom(_ts(valid.expires_at))
    message.issued_at.CopyFrom(_ts(valid.issued_at))
    cloud_of(config.final).to_proto(valid.material, message)
    return message


def _ts(epoch: float) -> Timestamp:
    ts = Timestamp()
    ts.FromSeconds(int(epoch))
    return ts
