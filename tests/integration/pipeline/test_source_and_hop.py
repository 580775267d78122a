"""The Workload API source and the AWS hop against the dev stack: checks and classification."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from bridge.cli import main
from bridge.clouds.aws import AwsHopConfig
from bridge.clouds.aws.sts import AwsWebIdentityHop, StsClients
from bridge.devstack import DEMO_ROLE_ARN, DevStack, GrpcFailure, HttpFailure
from bridge.errors import ExchangeError, SourceError
from bridge.model import JwtSvid
from bridge.sources.workload_api import WorkloadApiSource
from tests.conftest import WriteConfig

pytestmark = pytest.mark.integration
AUD = "sts.amazonaws.com"
DEMO = "spiffe://example.org/demo"


@pytest.fixture
def source(stack: DevStack) -> Iterator[WorkloadApiSource]:
    s = WorkloadApiSource(stack.workload_socket_uri, timeout=5, now=time.time)
    yield s
    s.close()


def _hop(stack: DevStack) -> AwsWebIdentityHop:
    return AwsWebIdentityHop(AwsHopConfig(role_arn=DEMO_ROLE_ARN, region="us-east-1",
                                          sts_endpoint=stack.aws_sts_url),
                             clients=StsClients(timeout=5))


def _svid(token: str) -> JwtSvid:
    now = time.time()
    return JwtSvid(spiffe_id=DEMO, audience=AUD, expires_at=now + 300, issued_at=now,
                   token=token, deadline=time.monotonic() + 300)


def test_source_fetches_a_checked_svid_through_py_spiffe(source: WorkloadApiSource) -> None:
    """A fetched SVID carries the SPIFFE ID, audience, exp and iat of the minted token."""
    svid = source.fetch(AUD, None)
    assert svid.spiffe_id == DEMO
    assert svid.audience == AUD
    assert 250 < svid.expires_at - time.time() <= 300
    assert svid.issued_at <= time.time()


def test_foreign_signed_svid_is_refused_by_the_local_bundle_check(
        stack: DevStack, source: WorkloadApiSource) -> None:
    """From the very first fetch, an SVID not signed by the trust domain's keys is refused."""
    impostor = stack.authority.impostor()
    stack.workload.faults.replace_svids(lambda sid, aud: impostor.mint(sid, list(aud), 300))
    with pytest.raises(SourceError) as err:
        source.fetch(AUD, None)
    assert err.value.reason == "invalid_svid"
    assert "validation" in err.value.detail
    assert err.value.retryable


def test_agent_socket_missing_at_start_is_retryable_then_recovers(short_dir: Path) -> None:
    """py-spiffe raises at construction without a socket; the source reports 'unavailable'."""
    stack = DevStack(short_dir / "late")
    source = WorkloadApiSource(stack.workload_socket_uri, timeout=2, now=time.time)
    try:
        with pytest.raises(SourceError) as err:
            source.fetch(AUD, None)
        assert err.value.retryable
        assert err.value.reason == "unavailable"
        stack.start()
        assert source.fetch(AUD, None).spiffe_id == DEMO
    finally:
        source.close()
        stack.stop()


@pytest.mark.parametrize(
    ("code", "retryable", "reason"),
    [
        (grpc.StatusCode.UNAVAILABLE, True, "unavailable"),
        (grpc.StatusCode.PERMISSION_DENIED, True, "permission_denied"),
        (grpc.StatusCode.INVALID_ARGUMENT, False, "invalid_argument"),
        (grpc.StatusCode.UNIMPLEMENTED, False, "unimplemented"),
    ],
    ids=["unavailable", "permission-denied", "invalid-argument", "unimplemented"],
)
def test_workload_api_status_codes_are_classified_per_spec(
        stack: DevStack, source: WorkloadApiSource, code: grpc.StatusCode, retryable: bool,
        reason: str) -> None:
    """SPIFFE Workload Endpoint §6: Unavailable/PermissionDenied retry, the rest do not."""
    stack.workload.faults.fail_next("FetchJWTSVID", GrpcFailure(code, "injected"))
    with pytest.raises(SourceError) as err:
        source.fetch(AUD, None)
    assert err.value.retryable is retryable
    assert err.value.reason == reason
    assert source.fetch(AUD, None).spiffe_id == DEMO


def test_unknown_spiffe_id_is_permission_denied_and_retryable(
        source: WorkloadApiSource) -> None:
    """Asking for an identity the workload lacks is 'not yet', per spec: retry, don't crash."""
    with pytest.raises(SourceError) as err:
        source.fetch(AUD, "spiffe://example.org/not-mine")
    assert err.value.reason == "permission_denied"
    assert err.value.retryable


def test_spiffe_id_selects_among_several_identities(short_dir: Path) -> None:
    """With two identities, `spiffe_id` picks the one asked for."""
    other = "spiffe://example.org/other"
    with DevStack(short_dir / "two", identities=(DEMO, other)) as stack:
        source = WorkloadApiSource(stack.workload_socket_uri, timeout=5, now=time.time)
        try:
            assert source.fetch(AUD, other).spiffe_id == other
            assert source.fetch(AUD, DEMO).spiffe_id == DEMO
        finally:
            source.close()


def test_svid_too_close_to_expiry_is_refused(stack: DevStack,
                                             source: WorkloadApiSource) -> None:
    """An SVID with less than the margin left is never sent to STS."""
    stack.workload.faults.replace_svids(
        lambda sid, aud: stack.authority.mint(sid, list(aud), 10), times=1)
    with pytest.raises(SourceError) as err:
        source.fetch(AUD, None)
    assert err.value.reason == "svid_expiring"


@pytest.mark.parametrize("kind", ["expired", "foreign-signed", "alg-none"])
def test_bad_svids_fail_the_refresh_clearly_and_reach_no_sts(
        stack: DevStack, write_config: WriteConfig, capsys: pytest.CaptureFixture[str],
        kind: str) -> None:
    """Expired, foreign-signed or unsigned SVIDs: `once` fails at the svid stage, STS untouched."""
    now = int(time.time())
    authority = stack.authority
    impostor = authority.impostor()

    def replacement(sid: str, aud: tuple[str, ...]) -> str:
        if kind == "expired":
            return authority.mint(sid, list(aud), 300, iat=now - 900,
                                  extra_claims={"exp": now - 600})
        if kind == "foreign-signed":
            return impostor.mint(sid, list(aud), 300)
        return _unsigned(sid, list(aud), now)

    stack.workload.faults.replace_svids(replacement)
    assert main(["once", "--config", str(write_config())]) == 1
    out = capsys.readouterr()
    assert "FAILED" in out.out
    assert "workload API" in out.out
    assert "Traceback" not in out.out + out.err
    assert stack.aws.requests == ()


def _unsigned(sid: str, aud: list[str], now: int) -> str:
    import base64
    import json

    def b64(doc: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(doc).encode()).rstrip(b"=").decode()

    return (b64({"alg": "none", "typ": "JWT", "kid": "x"}) + "." +
            b64({"sub": sid, "aud": aud, "exp": now + 300, "iat": now}) + ".")


@pytest.mark.parametrize(
    ("make_token", "code"),
    [
        ("foreign", "InvalidIdentityToken"),
        ("expired", "ExpiredTokenException"),
        ("wrong-aud", "InvalidIdentityToken"),
    ],
)
def test_hop_classifies_sts_token_refusals_as_fresh_svid_retries(
        stack: DevStack, make_token: str, code: str) -> None:
    """Sent straight to STS, bad tokens come back with AWS's codes, marked 'fetch a new SVID'."""
    now = int(time.time())
    if make_token == "foreign":
        token = stack.authority.impostor().mint(DEMO, [AUD], 300)
    elif make_token == "expired":
        token = stack.authority.mint(DEMO, [AUD], 300, iat=now - 900,
                                     extra_claims={"exp": now - 600})
    else:
        token = stack.authority.mint(DEMO, ["not-a-client-id"], 300)
    with pytest.raises(ExchangeError) as err:
        _hop(stack).exchange(_svid(token))
    assert err.value.code == code
    assert err.value.retryable
    assert err.value.fresh_svid
    assert token not in str(err.value)


@pytest.mark.parametrize(
    ("failure", "code", "retryable", "reason"),
    [
        (HttpFailure(503, "ServiceUnavailable"), "ServiceUnavailable", True, "unavailable"),
        (HttpFailure(400, "Throttling"), "Throttling", True, "throttled"),
        (HttpFailure(400, "IDPCommunicationError"), "IDPCommunicationError", True,
         "idp_unreachable"),
        (HttpFailure(403, "RegionDisabledException"), "RegionDisabledException", False,
         "region_disabled"),
    ],
    ids=["503", "throttling", "idp-unreachable", "region-disabled"],
)
def test_hop_classifies_sts_service_errors(stack: DevStack, failure: HttpFailure, code: str,
                                           retryable: bool, reason: str) -> None:
    """Transient STS errors are retryable, permanent ones are not; each keeps AWS's code."""
    stack.aws.faults.fail_next("AssumeRoleWithWebIdentity", failure)
    token = stack.authority.mint(DEMO, [AUD], 300)
    with pytest.raises(ExchangeError) as err:
        _hop(stack).exchange(_svid(token))
    assert (err.value.code, err.value.retryable, err.value.reason) == (code, retryable, reason)
    assert not err.value.fresh_svid


def test_hop_reports_an_unreachable_sts_as_retryable() -> None:
    """Connection refused is a retryable 'unreachable', not a crash."""
    hop = AwsWebIdentityHop(AwsHopConfig(role_arn=DEMO_ROLE_ARN, region="us-east-1",
                                         sts_endpoint="http://127.0.0.1:9"),
                            clients=StsClients(timeout=2))
    with pytest.raises(ExchangeError) as err:
        hop.exchange(_svid("eyJhbGciOiJFUzI1NiJ9.e30.sig"))
    assert err.value.retryable
    assert err.value.reason == "unreachable"
