"""The Entra emulator's directory keeps Graph's limits on federated credentials."""

from __future__ import annotations

import pytest

from bridge.devstack.azure import MAX_FEDERATED_CREDENTIALS, Directory, FederatedCredential

TENANT, CLIENT = "t-1.example.org", "c"


def _fic(i: int, **kw: str) -> FederatedCredential:
    fields = {"name": f"fic-{i}", "issuer": "https://issuer.example", "subject": f"s{i}", **kw}
    return FederatedCredential(**fields)


def test_at_most_twenty_federated_credentials_per_app() -> None:
    """The 21st is refused, as Graph refuses it; removing one makes room."""
    directory = Directory()
    for i in range(MAX_FEDERATED_CREDENTIALS):
        directory.add_federated_credential(TENANT, CLIENT, _fic(i))
    with pytest.raises(ValueError, match="at most 20"):
        directory.add_federated_credential(TENANT, CLIENT, _fic(99))
    directory.remove_federated_credential(TENANT, CLIENT, "fic-0")
    directory.add_federated_credential(TENANT, CLIENT, _fic(99))
    assert len(directory.federated(TENANT, CLIENT)) == MAX_FEDERATED_CREDENTIALS


@pytest.mark.parametrize(("fields", "says"), [
    ({"subject": "s" * 601}, "subject"),
    ({"issuer": "https://" + "i" * 600}, "issuer"),
    ({"name": "n" * 121}, "name"),
    ({"subject": ""}, "subject"),
])
def test_graph_length_limits(fields: dict[str, str], says: str) -> None:
    """600 characters for issuer, subject, audience; 120 for the name."""
    with pytest.raises(ValueError, match=says):
        Directory().add_federated_credential(TENANT, CLIENT, _fic(1, **fields))


def test_duplicate_names_are_refused() -> None:
    directory = Directory()
    directory.add_federated_credential(TENANT, CLIENT, _fic(1))
    with pytest.raises(ValueError, match="exists"):
        directory.add_federated_credential(TENANT, CLIENT, _fic(1, subject="other"))
