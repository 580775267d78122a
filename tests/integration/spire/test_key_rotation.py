"""JWT key rotation with `spire-server localauthority jwt prepare|activate|taint|revoke`.

What SPIRE v1.15.3 does, as these tests pin it down:

- prepare: the new key joins the bundle (server, agent's JWT bundles, OIDC `/keys`) but
  signs nothing yet;
- activate: new JWT-SVIDs are signed with the new key; the agent still hands out the
  SVIDs it cached, signed with the old key, and the old key stays published, so those
  keep working everywhere;
- taint: the old key stays in every bundle and in `/keys` (the server bundle marks it
  `tainted`, the JWKS cannot), so the clouds still accept tokens signed with it; but the
  agent evicts the cached SVIDs it signed, so workloads get new-key SVIDs at once;
- revoke (only a tainted key): the key leaves the server bundle, the agent's bundle and
  `/keys`; from then on the clouds refuse a token signed with it (AWS
  InvalidIdentityToken, Google invalid_grant), although it has not expired yet.

The bridge delivers at every step.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import boto3
import botocore
import botocore.config
import botocore.exceptions
import google.auth.exceptions
import pytest
import urllib3
from google.auth.transport.urllib3 import Request
from google.oauth2 import sts as google_sts

from tests.integration.spire.conftest import RunOnce, WriteBridgeConfig
from tests.support.spire import (
    GCP_PROVIDER,
    ROLE_ANY,
    SERVICE_ACCOUNT,
    WORKLOAD_A,
    SpireDeployment,
    jwt_claims,
    jwt_header,
    unique_audience,
    wait_until,
)

pytestmark = pytest.mark.integration

TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
JWT_TYPE = "urn:ietf:params:oauth:token-type:jwt"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"


def _aws_accepts(spire: SpireDeployment, token: str) -> None:
    """AssumeRoleWithWebIdentity with this token (unsigned, as any SDK sends it)."""
    client = boto3.client("sts", region_name="us-east-1", endpoint_url=spire.aws.url,
                          config=botocore.config.Config(signature_version=botocore.UNSIGNED))
    reply = client.assume_role_with_web_identity(
        RoleArn=ROLE_ANY, RoleSessionName="rotation-check", WebIdentityToken=token)
    assert reply["SubjectFromWebIdentityToken"] == WORKLOAD_A


def _gcp_accepts(spire: SpireDeployment, token: str) -> None:
    """Google STS token exchange with this token, through google-auth's own STS client."""
    reply = google_sts.Client(spire.gcp.sts_url).exchange_token(
        Request(urllib3.PoolManager()), grant_type=TOKEN_EXCHANGE, subject_token=token,
        subject_token_type=JWT_TYPE, audience=GCP_PROVIDER,
        scopes=["https://www.googleapis.com/auth/cloud-platform"],
        requested_token_type=ACCESS_TOKEN_TYPE)
    assert reply["access_token"]


def _authorities(spire: SpireDeployment) -> dict[str, Any]:
    return dict(spire.server_json("localauthority", "jwt", "show"))


def test_jwt_key_rotation_prepare_activate_taint_revoke(
        spire: SpireDeployment, bridge_config: WriteBridgeConfig, run_once: RunOnce) -> None:
    aud = unique_audience("rotation")
    spire.allow_aws_audience(aud)
    config = bridge_config([
        {"name": "aws", "spiffe_id": WORKLOAD_A, "audience": aud,
         "aws": {"role_arn": ROLE_ANY, "region": "us-east-1", "sts_endpoint": spire.aws.url}},
        {"name": "gcp", "spiffe_id": WORKLOAD_A,
         "gcp": {"workload_identity_provider": GCP_PROVIDER,
                 "sts_endpoint": spire.gcp.sts_url, "iam_credentials_endpoint": spire.gcp.url,
                 "service_account": SERVICE_ACCOUNT}},
    ])

    def bridge_delivers() -> str:
        """Run the bridge once; both targets deliver. The kid of the SVID AWS verified."""
        spire.aws.clear_requests()
        result = run_once(config)
        for name, status in result.statuses.items():
            assert status.consecutive_failures == 0, (name, status.last_error_detail)
        (request,) = spire.aws.requests
        return str(jwt_header(request.params["WebIdentityToken"])["kid"])

    def kid_of(audience: str) -> str:
        return str(jwt_header(spire.fetch_jwt(audience, WORKLOAD_A).token)["kid"])

    old = _authorities(spire)["active"]["authority_id"]
    assert spire.bundle_jwt_authorities() == {old: False}
    assert spire.published_kids() == {old}
    assert spire.agent_bundle_kids() == {old}
    old_aws = spire.fetch_jwt(aud, WORKLOAD_A).token  # cached by the agent from now on
    old_gcp = spire.fetch_jwt(GCP_PROVIDER, WORKLOAD_A).token
    assert jwt_header(old_aws)["kid"] == jwt_header(old_gcp)["kid"] == old
    assert bridge_delivers() == old

    # prepare: published everywhere, signs nothing
    new = spire.server_json("localauthority", "jwt", "prepare")["prepared_authority"][
        "authority_id"]
    assert new != old
    assert spire.bundle_jwt_authorities() == {old: False, new: False}
    _wait_everywhere(spire, lambda kids: kids == {old, new}, "the prepared key published")
    assert kid_of(unique_audience("prepared")) == old
    assert bridge_delivers() == old

    # activate: new SVIDs are signed with the new key; cached old-key SVIDs still served
    spire.server_json("localauthority", "jwt", "activate", "-authorityID", new)
    state = _authorities(spire)
    assert (state["active"]["authority_id"], state["old"]["authority_id"]) == (new, old)
    assert kid_of(unique_audience("activated")) == new
    assert spire.fetch_jwt(aud, WORKLOAD_A).token == old_aws
    assert bridge_delivers() == old  # the agent's cached SVID, old key still published
    _aws_accepts(spire, old_aws)

    # taint: still published (the clouds accept it), but the agent drops its SVIDs
    spire.server_json("localauthority", "jwt", "taint", "-authorityID", old)
    assert spire.bundle_jwt_authorities() == {old: True, new: False}
    wait_until(lambda: spire.fetch_jwt(aud, WORKLOAD_A).token != old_aws, 15,
               "the agent to evict the SVIDs signed by the tainted key")
    assert kid_of(aud) == new
    assert kid_of(GCP_PROVIDER) == new
    assert spire.published_kids() == {old, new}
    assert spire.agent_bundle_kids() == {old, new}
    _aws_accepts(spire, old_aws)
    _gcp_accepts(spire, old_gcp)
    assert bridge_delivers() == new

    # revoke: gone from every bundle; the clouds refuse its unexpired tokens
    spire.server_json("localauthority", "jwt", "revoke", "-authorityID", old)
    assert spire.bundle_jwt_authorities() == {new: False}
    _wait_everywhere(spire, lambda kids: kids == {new}, "the revoked key withdrawn")
    assert jwt_claims(old_aws)["exp"] > time.time() + 5  # refused although unexpired
    with pytest.raises(botocore.exceptions.ClientError) as aws_refusal:
        _aws_accepts(spire, old_aws)
    assert aws_refusal.value.response["Error"]["Code"] == "InvalidIdentityToken"
    with pytest.raises(google.auth.exceptions.OAuthError, match="invalid_grant"):
        _gcp_accepts(spire, old_gcp)
    assert bridge_delivers() == new
    # `jwt show` still names the revoked key as the old authority: the journal keeps it
    assert _authorities(spire)["old"]["authority_id"] == old


def _wait_everywhere(spire: SpireDeployment, ok: Callable[[set[str]], bool], what: str
                     ) -> None:
    """Until the agent's JWT bundle and the OIDC provider's /keys both satisfy `ok`."""
    wait_until(lambda: ok(spire.agent_bundle_kids()), 15, f"{what} (agent bundle)")
    wait_until(lambda: ok(spire.published_kids()), 15, f"{what} (OIDC /keys)")
