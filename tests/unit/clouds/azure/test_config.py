"""The `azure:` keys: what is accepted, and each refusal naming its key."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml

from bridge.clouds.azure import DEFAULT_AUDIENCE, DEFAULT_AUTHORITY, AzureHopConfig
from bridge.config import parse_config
from bridge.errors import ConfigError
from tests.support.configs import BASE

TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
CLIENT = "5e3ce6c0-2b1f-4285-8d4b-75ee78787346"
AZURE: dict[str, Any] = {"tenant_id": TENANT, "client_id": CLIENT,
                         "scopes": ["https://storage.azure.com/.default"]}


def _doc(target: dict[str, Any]) -> str:
    doc = copy.deepcopy(BASE)
    doc["targets"] = [{"name": "blob", **target}]
    return yaml.safe_dump(doc)


def _problems(target: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(ConfigError) as info:
        parse_config(_doc(target), env={})
    return {p.path: p.message for p in info.value.problems}


def test_an_azure_target_with_defaults() -> None:
    """Defaults: Entra's public authority, the exchange audience, no token file."""
    config = parse_config(_doc({"azure": AZURE}), env={})
    (target,) = config.targets
    hop = target.final
    assert isinstance(hop, AzureHopConfig)
    assert (hop.tenant_id, hop.client_id, hop.scope) == (
        TENANT, CLIENT, "https://storage.azure.com/.default")
    assert hop.authority_host == DEFAULT_AUTHORITY
    assert target.audience == DEFAULT_AUDIENCE == "api://AzureADTokenExchange"
    assert not hop.federated_token_file


def test_a_domain_tenant_and_a_sovereign_authority() -> None:
    """A tenant by domain name, the authority of another cloud, an api:// resource."""
    config = parse_config(_doc({"azure": {
        **AZURE, "tenant_id": "contoso.onmicrosoft.com",
        "authority_host": "https://login.microsoftonline.us/",
        "scopes": ["api://0f1e2d3c-0000-4000-8000-000000000000/.default"]}}), env={})
    hop = config.targets[0].final
    assert isinstance(hop, AzureHopConfig)
    assert hop.authority == "https://login.microsoftonline.us/contoso.onmicrosoft.com"
    assert hop.resource == "api://0f1e2d3c-0000-4000-8000-000000000000"


@pytest.mark.parametrize(("edit", "path", "says"), [
    ({"tenant_id": "not a tenant"}, "targets[0].azure.tenant_id", "not a tenant ID"),
    ({"client_id": "my-app"}, "targets[0].azure.client_id", "GUID"),
    ({"client_id": None}, "targets[0].azure.client_id", "required"),
    ({"scopes": None}, "targets[0].azure.scopes", "required"),
    ({"scopes": []}, "targets[0].azure.scopes", "exactly one"),
    ({"scopes": ["https://storage.azure.com/.default", "https://vault.azure.net/.default"]},
     "targets[0].azure.scopes", "exactly one"),
    ({"scopes": ["https://storage.azure.com/user_impersonation"]},
     "targets[0].azure.scopes[0]", "/.default"),
    ({"authority_host": "http://login.microsoftonline.com"},
     "targets[0].azure.authority_host", "https"),
    ({"authority_host": "http://127.0.0.1:8443"}, "targets[0].azure.authority_host",
     "only https"),
    ({"authority_host": "https://login.microsoftonline.com/common"},
     "targets[0].azure.authority_host", "without a path"),
    ({"authority_host": "https://user@login.microsoftonline.com"},
     "targets[0].azure.authority_host", "userinfo"),
    ({"federated_token_file": True, "svid_ttl": "1h"}, "targets[0].azure.federated_token_file",
     "jwt_file: true"),
    ({"bogus": 1}, "targets[0].azure.bogus", "unknown key"),
])
def test_refusals_name_their_key(edit: dict[str, Any], path: str, says: str) -> None:
    """Each mistake is one problem at its own key path."""
    section = {**AZURE, **edit}
    section = {k: v for k, v in section.items() if v is not None}
    problems = _problems({"azure": section})
    assert path in problems, problems
    assert says in problems[path]


def test_federated_token_file_needs_a_long_enough_svid() -> None:
    """With SPIRE's default 5 min TTL the file cannot outlive azure-identity's 600 s
    cache: `check` refuses and says what to raise in SPIRE."""
    problems = _problems({"jwt_file": True, "azure": {**AZURE, "federated_token_file": True}})
    message = problems["targets[0].azure.svid_ttl"]
    assert "600s" in message
    assert "-jwtSVIDTTL 1800" in message
    ok = parse_config(_doc({"jwt_file": True, "azure": {**AZURE, "federated_token_file": True,
                                                         "svid_ttl": "30m"}}), env={})
    assert ok.targets[0].jwt_file


def test_chain_audience_for_an_azure_hop() -> None:
    """After GCP, the Azure hop is fed a Google ID token minted for its audience."""
    config = parse_config(_doc({
        "gcp": {"workload_identity_provider": "//iam.googleapis.com/projects/123456/locations/"
                "global/workloadIdentityPools/spire/providers/spire",
                "service_account": "writer@proj.iam.gserviceaccount.com"},
        "chain": [{"azure": AZURE}]}), env={})
    assert config.targets[0].final.audience == DEFAULT_AUDIENCE
