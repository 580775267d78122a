import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class State(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STATE_UNSPECIFIED: _ClassVar[State]
    STATE_FRESH: _ClassVar[State]
    STATE_STALE: _ClassVar[State]
    STATE_EXPIRED: _ClassVar[State]

class Cloud(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CLOUD_UNSPECIFIED: _ClassVar[Cloud]
    CLOUD_AWS: _ClassVar[Cloud]
    CLOUD_GCP: _ClassVar[Cloud]
    CLOUD_AZURE: _ClassVar[Cloud]
STATE_UNSPECIFIED: State
STATE_FRESH: State
STATE_STALE: State
STATE_EXPIRED: State
CLOUD_UNSPECIFIED: Cloud
CLOUD_AWS: Cloud
CLOUD_GCP: Cloud
CLOUD_AZURE: Cloud

class ListTargetsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Target(_message.Message):
    __slots__ = ("name", "cloud", "state", "expires_at", "last_success", "last_error", "consecutive_failures")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CLOUD_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    LAST_SUCCESS_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_FIELD_NUMBER: _ClassVar[int]
    CONSECUTIVE_FAILURES_FIELD_NUMBER: _ClassVar[int]
    name: str
    cloud: Cloud
    state: State
    expires_at: _timestamp_pb2.Timestamp
    last_success: _timestamp_pb2.Timestamp
    last_error: str
    consecutive_failures: int
    def __init__(self, name: _Optional[str] = ..., cloud: _Optional[_Union[Cloud, str]] = ..., state: _Optional[_Union[State, str]] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_success: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_error: _Optional[str] = ..., consecutive_failures: _Optional[int] = ...) -> None: ...

class ListTargetsResponse(_message.Message):
    __slots__ = ("targets",)
    TARGETS_FIELD_NUMBER: _ClassVar[int]
    targets: _containers.RepeatedCompositeFieldContainer[Target]
    def __init__(self, targets: _Optional[_Iterable[_Union[Target, _Mapping]]] = ...) -> None: ...

class GetCredentialRequest(_message.Message):
    __slots__ = ("target", "workload_target")
    TARGET_FIELD_NUMBER: _ClassVar[int]
    WORKLOAD_TARGET_FIELD_NUMBER: _ClassVar[int]
    target: str
    workload_target: str
    def __init__(self, target: _Optional[str] = ..., workload_target: _Optional[str] = ...) -> None: ...

class WatchCredentialRequest(_message.Message):
    __slots__ = ("target", "workload_target")
    TARGET_FIELD_NUMBER: _ClassVar[int]
    WORKLOAD_TARGET_FIELD_NUMBER: _ClassVar[int]
    target: str
    workload_target: str
    def __init__(self, target: _Optional[str] = ..., workload_target: _Optional[str] = ...) -> None: ...

class AwsCredentials(_message.Message):
    __slots__ = ("access_key_id", "secret_access_key", "session_token", "assumed_role_arn")
    ACCESS_KEY_ID_FIELD_NUMBER: _ClassVar[int]
    SECRET_ACCESS_KEY_FIELD_NUMBER: _ClassVar[int]
    SESSION_TOKEN_FIELD_NUMBER: _ClassVar[int]
    ASSUMED_ROLE_ARN_FIELD_NUMBER: _ClassVar[int]
    access_key_id: str
    secret_access_key: str
    session_token: str
    assumed_role_arn: str
    def __init__(self, access_key_id: _Optional[str] = ..., secret_access_key: _Optional[str] = ..., session_token: _Optional[str] = ..., assumed_role_arn: _Optional[str] = ...) -> None: ...

class GcpAccessToken(_message.Message):
    __slots__ = ("access_token", "token_type", "principal")
    ACCESS_TOKEN_FIELD_NUMBER: _ClassVar[int]
    TOKEN_TYPE_FIELD_NUMBER: _ClassVar[int]
    PRINCIPAL_FIELD_NUMBER: _ClassVar[int]
    access_token: str
    token_type: str
    principal: str
    def __init__(self, access_token: _Optional[str] = ..., token_type: _Optional[str] = ..., principal: _Optional[str] = ...) -> None: ...

class AzureAccessToken(_message.Message):
    __slots__ = ("access_token", "token_type", "tenant_id", "client_id", "resource")
    ACCESS_TOKEN_FIELD_NUMBER: _ClassVar[int]
    TOKEN_TYPE_FIELD_NUMBER: _ClassVar[int]
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_FIELD_NUMBER: _ClassVar[int]
    access_token: str
    token_type: str
    tenant_id: str
    client_id: str
    resource: str
    def __init__(self, access_token: _Optional[str] = ..., token_type: _Optional[str] = ..., tenant_id: _Optional[str] = ..., client_id: _Optional[str] = ..., resource: _Optional[str] = ...) -> None: ...

class Credential(_message.Message):
    __slots__ = ("target", "state", "expires_at", "issued_at", "spiffe_id", "aws", "gcp", "azure")
    TARGET_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    ISSUED_AT_FIELD_NUMBER: _ClassVar[int]
    SPIFFE_ID_FIELD_NUMBER: _ClassVar[int]
    AWS_FIELD_NUMBER: _ClassVar[int]
    GCP_FIELD_NUMBER: _ClassVar[int]
    AZURE_FIELD_NUMBER: _ClassVar[int]
    target: str
    state: State
    expires_at: _timestamp_pb2.Timestamp
    issued_at: _timestamp_pb2.Timestamp
    spiffe_id: str
    aws: AwsCredentials
    gcp: GcpAccessToken
    azure: AzureAccessToken
    def __init__(self, target: _Optional[str] = ..., state: _Optional[_Union[State, str]] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., issued_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., spiffe_id: _Optional[str] = ..., aws: _Optional[_Union[AwsCredentials, _Mapping]] = ..., gcp: _Optional[_Union[GcpAccessToken, _Mapping]] = ..., azure: _Optional[_Union[AzureAccessToken, _Mapping]] = ...) -> None: ...

class GetCredentialResponse(_message.Message):
    __slots__ = ("credential",)
    CREDENTIAL_FIELD_NUMBER: _ClassVar[int]
    credential: Credential
    def __init__(self, credential: _Optional[_Union[Credential, _Mapping]] = ...) -> None: ...

class WatchCredentialResponse(_message.Message):
    __slots__ = ("credential",)
    CREDENTIAL_FIELD_NUMBER: _ClassVar[int]
    credential: Credential
    def __init__(self, credential: _Optional[_Union[Credential, _Mapping]] = ...) -> None: ...
