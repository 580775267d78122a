"""Azure material on the gRPC API: `Credential.azure` (AzureAccessToken), added under
spiffebridge.v1's compatibility rules (new message, new field and enum numbers)."""

from __future__ import annotations

from bridge._proto.spiffebridge.v1 import credentials_pb2 as pb
from bridge.clouds.azure import AZURE, AzureToken
from bridge.model import Credential, State, TargetStatus
from bridge.serving.grpc.convert import ServedTarget, credential_message, target_message

SERVED = ServedTarget("blob", (), AZURE.proto_cloud, AZURE.proto_field)


def _status(deadline: float) -> TargetStatus:
    token = AzureToken(access_token="eyJ-azure-token", expires_at=1_900_003_600.0,
                       tenant_id="t", client_id="c", resource="https://storage.azure.com")
    credential = Credential(target="blob", issued_at=1_900_000_000.0,
                            expires_at=1_900_003_600.0, svid_expires_at=0.0, material=token,
                            deadline=deadline, received=0.0)
    return TargetStatus(name="blob", state=State.FRESH, credential=credential, delivered=True)


def test_numbers_are_new_ones() -> None:
    """CLOUD_AZURE = 3 and `azure = 12` in the material oneof; the old ones unmoved."""
    assert pb.CLOUD_AZURE == AZURE.proto_cloud == 3
    fields = pb.Credential.DESCRIPTOR.fields_by_name
    assert (fields["aws"].number, fields["gcp"].number, fields["azure"].number) == (10, 11, 12)
    assert [f.name for f in pb.AzureAccessToken.DESCRIPTOR.fields] == [
        "access_token", "token_type", "tenant_id", "client_id", "resource"]


def test_a_valid_azure_credential_travels_whole() -> None:
    message = credential_message(SERVED, _status(deadline=100.0), now=10.0)
    assert message.WhichOneof("material") == "azure"
    assert (message.azure.access_token, message.azure.tenant_id, message.azure.client_id,
            message.azure.resource) == ("eyJ-azure-token", "t", "c", "https://storage.azure.com")
    assert target_message(SERVED, _status(deadline=100.0), now=10.0).cloud == pb.CLOUD_AZURE


def test_an_expired_one_carries_no_material() -> None:
    message = credential_message(SERVED, _status(deadline=100.0), now=200.0)
    assert message.WhichOneof("material") is None
    assert message.state == pb.STATE_EXPIRED
