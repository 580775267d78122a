"""Store values to API messages. A message carries material only while the credential
is valid at `now`; an expired target is described, never handed out."""

from __future__ import annotations

from google.protobuf.timestamp_pb2 import Timestamp

from bridge._proto.spiffebridge.v1 import credentials_pb2 as pb
from bridge.config import AwsTarget, TargetConfig
from bridge.model import State, TargetStatus

_STATES = {State.FRESH: pb.STATE_FRESH, State.STALE: pb.STATE_STALE,
           State.EXPIRED: pb.STATE_EXPIRED}


def target_message(config: TargetConfig, status: TargetStatus, now: float) -> pb.Target:
    valid = status.valid_credential(now)
    message = pb.Target(
        name=config.name,
        cloud=pb.CLOUD_AWS if isinstance(config.final, AwsTarget) else pb.CLOUD_GCP,
        state=_STATES[status.served_state(now)],
        last_error=status.last_error or "",
        consecutive_failures=status.consecutive_failures)
    if valid is not None:
        message.expires_at.CopyFrom(_ts(valid.expires_at))
    if status.last_success is not None:
        message.last_success.CopyFrom(_ts(status.last_success))
    return message


def credential_message(status: TargetStatus, now: float) -> pb.Credential:
    valid = status.valid_credential(now)
    message = pb.Credential(target=status.name, state=_STATES[status.served_state(now)])
    if valid is None:
        return message
    message.expires_at.CopyFrom(_ts(valid.expires_at))
    message.issued_at.CopyFrom(_ts(valid.issued_at))
    if valid.aws is not None:
        message.aws.CopyFrom(pb.AwsCredentials(
            access_key_id=valid.aws.access_key_id,
            secret_access_key=valid.aws.secret_access_key,
            session_token=valid.aws.session_token,
            assumed_role_arn=valid.aws.assumed_role_arn))
    elif valid.gcp is not None:
        message.gcp.CopyFrom(pb.GcpAccessToken(
            access_token=valid.gcp.access_token, token_type=valid.gcp.token_type,
            principal=valid.gcp.principal))
    return message


def _ts(epoch: float) -> Timestamp:
    ts = Timestamp()
    ts.FromSeconds(int(epoch))
    return ts
