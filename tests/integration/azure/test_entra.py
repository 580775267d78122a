"""The Entra hop on the dev stack's Entra emulator: what the bridge sends and writes,
and each refusal Entra gives, with the bridge's classification of it."""

from __future__ import annotations

import json
import time
from pathlib import Path

import jwt
import pytest

from bridge.cli import main
from bridge.devstack import (
    AZURE_AUDIENCE,
    AZURE_CLIENT_ID,
    AZURE_TENANT_ID,
    DevStack,
    HttpFailure,
)
from bridge.devstack.azure import (
    JWT_BEARER,
    LEEWAY,
    MAX_LIFETIME,
    MIN_LIFETIME,
    OP_TOKEN,
    FederatedCredential,
)
from bridge.errors import ExchangeError
from bridge.model import JwtSvid
from tests.conftest import WriteConfig
from tests.integration.azure.conftest import MakeHop, azure_section

pytestmark = pytest.mark.integration
DEMO = "spiffe://example.org/demo"


def _svid(token: str) -> JwtSvid:
    claims = jwt.decode(token, options={"verify_signature": False})
    return JwtSvid(claims["sub"], AZURE_AUDIENCE, float(claims["exp"]), float(claims["iat"]),
                   token)




def test_azure_target_writes_token_and_json(stack: DevStack, write_config: WriteConfig,
                                            outdir: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    """JWT-SVID -> Entra: azure/<t>.token and azure/<t>.json hold Entra's token for the
    resource, with its 60-90 min expiry; the request is Entra's client-credentials form."""
    config = write_config(targets=[{"name": "blob", "azure": azure_section(stack)}])
    before = time.time()
    assert main(["once", "--config", str(config)]) == 0, capsys.readouterr().out
    token = (outdir / "azure" / "blob.token").read_text()
    doc = json.loads((outdir / "azure" / "blob.json").read_text())
    assert doc["access_token"] == token
    assert (doc["tenant_id"], doc["client_id"]) == (AZURE_TENANT_ID, AZURE_CLIENT_ID)
    assert doc["resource"] == "https://storage.azure.com"
    issued = stack.azure.whoami(token)
    assert issued is not None
    assert issued.subject == DEMO
    assert MIN_LIFETIME - 5 <= doc["expires_on"] - before <= MAX_LIFETIME + 5
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["aud"] == "https://storage.azure.com"
    assert claims["tid"] == AZURE_TENANT_ID
    assert claims["appid"] == AZURE_CLIENT_ID
    assert claims["iss"] == f"https://sts.windows.net/{AZURE_TENANT_ID}/"
    form = next(r.form for r in stack.azure.requests if r.operation == OP_TOKEN)
    assert form["grant_type"] == "client_credentials"
    assert form["client_assertion_type"] == JWT_BEARER
    assert form["scope"] == "https://storage.azure.com/.default"
    assert form["client_id"] == AZURE_CLIENT_ID
    assertion = jwt.decode(form["client_assertion"], options={"verify_signature": False})
    assert assertion["aud"] == [AZURE_AUDIENCE]
    assert assertion["sub"] == DEMO


def test_each_exchange_is_a_fresh_request(stack: DevStack, make_hop: MakeHop) -> None:
    """msal's token cache never answers a later exchange: each one reaches Entra."""
    hop = make_hop()
    svid = _svid(stack.authority.mint(DEMO, [AZURE_AUDIENCE], 600))
    first, second = hop.exchange(svid), hop.exchange(svid)
    assert first.access_token != second.access_token
    assert sum(r.operation == OP_TOKEN for r in stack.azure.requests) == 2


def test_lifetimes_are_random_in_60_to_90_minutes(stack: DevStack, make_hop: MakeHop) -> None:
    """Entra's default access token lifetime: drawn from 60-90 minutes."""
    hop = make_hop()
    svid = _svid(stack.authority.mint(DEMO, [AZURE_AUDIENCE], 600))
    lifetimes = set()
    for _ in range(8):
        asked = time.time()
        lifetimes.add(round(hop.exchange(svid).expires_at - asked))
    assert all(MIN_LIFETIME - 2 <= x <= MAX_LIFETIME + 2 for x in lifetimes)
    assert len(lifetimes) > 1


def _refused(hop_call: object) -> ExchangeError:
    with pytest.raises(ExchangeError) as caught:
        hop_call()  # type: ignore[operator]
    return caught.value


@pytest.mark.parametrize(("case", "code", "reason", "retryable", "fresh"), [
    ("wrong-issuer", "AADSTS700211", "issuer_mismatch", False, False),
    ("wrong-subject", "AADSTS700213", "subject_mismatch", False, False),
    ("wrong-audience", "AADSTS700212", "audience_mismatch", False, False),
    ("expired", "AADSTS700024", "token_expired", True, True),
    ("not-yet-valid", "AADSTS700024", "token_expired", True, True),
    ("foreign-signed", "AADSTS700027", "invalid_token", True, True),
    ("unknown-kid", "AADSTS7000272", "invalid_token", True, True),
    ("not-a-jwt", "AADSTS50027", "invalid_token", True, True),
])
def test_assertion_refusals_are_classified(stack: DevStack, make_hop: MakeHop, case: str,
                                           code: str, reason: str, retryable: bool,
                                           fresh: bool) -> None:
    """Entra's refusal of the assertion itself, with its AADSTS code; permanent for a
    trust that does not match, a fresh SVID for one that is expired or badly signed."""
    now = int(time.time())
    authority = stack.authority
    if case == "wrong-issuer":
        stack.azure.directory.remove_federated_credential(AZURE_TENANT_ID, AZURE_CLIENT_ID,
                                                          "spire")
        stack.azure.directory.add_federated_credential(
            AZURE_TENANT_ID, AZURE_CLIENT_ID,
            FederatedCredential("other", issuer="https://oidc.example.net", subject=DEMO))
    token = {
        "wrong-issuer": lambda: authority.mint(DEMO, [AZURE_AUDIENCE], 600),
        "wrong-subject": lambda: authority.mint("spiffe://example.org/other",
                                                [AZURE_AUDIENCE], 600),
        "wrong-audience": lambda: authority.mint(DEMO, ["sts.amazonaws.com"], 600),
        "expired": lambda: authority.mint(DEMO, [AZURE_AUDIENCE], 60,
                                          iat=now - LEEWAY - 200),
        "not-yet-valid": lambda: authority.mint(DEMO, [AZURE_AUDIENCE], 600,
                                                extra_claims={"nbf": now + LEEWAY + 200}),
        "foreign-signed": lambda: authority.impostor().mint(DEMO, [AZURE_AUDIENCE], 600),
        "unknown-kid": lambda: authority.mint(DEMO, [AZURE_AUDIENCE], 600,
                                              headers={"kid": "not-published"}),
        "not-a-jwt": lambda: "not.a.jwt",
    }[case]()
    svid = JwtSvid(DEMO, AZURE_AUDIENCE, now + 600.0, float(now), token)
    err = _refused(lambda: make_hop().exchange(svid))
    assert (err.code, err.reason, err.retryable, err.fresh_svid) == (code, reason, retryable,
                                                                     fresh)
    assert err.hop == "azure_entra"
    assert token not in str(err)


@pytest.mark.parametrize(("overrides", "code", "reason"), [
    ({"client_id": "00000000-0000-0000-0000-000000000001"}, "AADSTS700016", "unknown_client"),
    ({"tenant_id": "00000000-0000-0000-0000-000000000002"}, "AADSTS90002", "unknown_tenant"),
    ({"scope": "https://vault.azure.net/.default"}, "AADSTS500011", "invalid_scope"),
])
def test_directory_refusals_are_permanent(stack: DevStack, make_hop: MakeHop,
                                          overrides: dict[str, object], code: str,
                                          reason: str) -> None:
    """An unknown app, tenant or resource: permanent, named by Entra's code."""
    svid = _svid(stack.authority.mint(DEMO, [AZURE_AUDIENCE], 600))
    err = _refused(lambda: make_hop(**overrides).exchange(svid))
    assert (err.code, err.reason, err.retryable) == (code, reason, False)


@pytest.mark.parametrize(("status", "reason"), [(429, "throttled"), (503, "unavailable")])
def test_throttling_and_outages_retry_after(stack: DevStack, make_hop: MakeHop, status: int,
                                            reason: str) -> None:
    """429 and 5xx are retried, no sooner than Entra's Retry-After."""
    stack.azure.retry_after = 17
    stack.azure.faults.fail_next(OP_TOKEN, HttpFailure(status, "temporarily_unavailable"))
    svid = _svid(stack.authority.mint(DEMO, [AZURE_AUDIENCE], 600))
    err = _refused(lambda: make_hop().exchange(svid))
    assert (err.reason, err.retryable, err.retry_after) == (reason, True, 17.0)


def test_unreachable_entra_is_retryable(stack: DevStack, make_hop: MakeHop) -> None:
    """No answer at all: retried, and the message names the authority."""
    hop = make_hop()
    stack.azure.stop()
    svid = _svid(stack.authority.mint(DEMO, [AZURE_AUDIENCE], 600))
    err = _refused(lambda: hop.exchange(svid))
    assert (err.reason, err.retryable) == ("unreachable", True)
    assert stack.azure_authority in str(err)


def test_unreachable_issuer_is_retryable(stack: DevStack, make_hop: MakeHop) -> None:
    """Entra cannot read the SPIFFE issuer's keys: retried (the issuer may come back)."""
    stack.oidc.stop()
    svid = _svid(stack.authority.mint(DEMO, [AZURE_AUDIENCE], 600))
    err = _refused(lambda: make_hop().exchange(svid))
    assert (err.code, err.reason, err.retryable) == ("AADSTS7000274", "idp_unreachable", True)


def test_once_reports_a_refusal_with_the_hop_and_code(
        stack: DevStack, write_config: WriteConfig, outdir: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """`once` fails, names the Entra hop and the AADSTS code, writes no azure files."""
    config = write_config(targets=[{"name": "blob", "spiffe_id": "spiffe://example.org/demo",
                                    "azure": azure_section(
                                        stack, client_id="00000000-0000-0000-0000-000000000009")}])
    assert main(["once", "--config", str(config)]) == 1
    out = capsys.readouterr()
    assert "azure_entra" in out.out + out.err
    assert "AADSTS700016" in out.out + out.err
    assert not (outdir / "azure" / "blob.token").exists()


def test_a_rotated_issuer_key_is_fetched(stack: DevStack, make_hop: MakeHop) -> None:
    """Entra caches the issuer's JWKS and fetches it again for a `kid` it does not know:
    an SVID signed by a key rotated in after the first exchange is accepted."""
    hop = make_hop()
    hop.exchange(_svid(stack.authority.mint(DEMO, [AZURE_AUDIENCE], 600)))
    stack.rotate_keys()
    rotated = _svid(stack.authority.mint(DEMO, [AZURE_AUDIENCE], 600))
    assert jwt.get_unverified_header(rotated.token)["kid"] == stack.authority.active_kid
    assert hop.exchange(rotated).access_token
