"""Each hop names the quota scope its calls count against (PROTOCOLS.md §11), and
throttling answers are classified as such (retryable, never permanent)."""

from __future__ import annotations

import botocore.exceptions
import pytest

from bridge.clouds import HopContext, Link, Quota, quota_of
from bridge.clouds.aws import AwsHopConfig
from bridge.clouds.aws.cloud import AwsSession
from bridge.clouds.aws.sts import _classify_client_error
from bridge.clouds.gcp.classify import classify_iam, classify_sts
from bridge.clouds.gcp.cloud import GcpSession
from bridge.clouds.gcp.config import GcpHopConfig

ROLE = "arn:aws:iam::111122223333:role/etl"
TENANT = "arn:aws:iam::444455556666:role/tenant"
PROVIDER = ("//iam.googleapis.com/projects/123456/locations/global/workloadIdentityPools/p/"
            "providers/s")


def test_aws_hops_count_against_their_account_and_region_at_600_per_second() -> None:
    """Web identity: the role's account; AssumeRole: the signing session's account."""
    session = AwsSession(HopContext(timeout=5.0))
    first = AwsHopConfig(role_arn=ROLE, region="eu-west-1")
    tenant = AwsHopConfig(role_arn=TENANT, region="")
    (web,) = session.build(first, link=Link.SVID, earlier=())
    (assume,) = session.build(tenant, link=Link.NATIVE, earlier=(first,))
    assert quota_of(web) == Quota("aws_sts 111122223333 eu-west-1", 600.0, quota_of(web).source)
    assert quota_of(assume).scope == "aws_sts 111122223333 eu-west-1"
    assert "STS request quotas" in quota_of(web).source


def test_gcp_hops_count_against_the_provider_project_and_the_service_account_project() -> None:
    """STS: 6,000/min of the provider's project; an ID token: 60,000/min of the SA's."""
    session = GcpSession(HopContext(timeout=5.0))
    hop = GcpHopConfig(workload_identity_provider=PROVIDER,
                       service_account="writer@proj-a.iam.gserviceaccount.com")
    (federation,) = session.build(hop, link=Link.SVID, earlier=())
    (mint,) = session.mint(hop, audience="sts.amazonaws.com")
    assert (quota_of(federation).scope, quota_of(federation).rate) == ("gcp_sts 123456", 100.0)
    assert (quota_of(mint).scope, quota_of(mint).rate) == ("gcp_iam proj-a", 1000.0)


def test_a_hop_without_a_quota_is_its_own_endpoint_scope() -> None:
    """A cloud added later that names no quota: one scope per endpoint, the default rate."""
    class Bare:
        name = "other"
        scope = "other_sts tenant-1"
        judge = "other"

    assert quota_of(Bare()).scope == "other_sts tenant-1"  # type: ignore[arg-type]


def _client_error(status: int, code: str, headers: dict[str, str] | None = None
                  ) -> botocore.exceptions.ClientError:
    return botocore.exceptions.ClientError(
        {"Error": {"Code": code, "Message": "Rate exceeded"},
         "ResponseMetadata": {"HTTPStatusCode": status, "HTTPHeaders": headers or {}}},
        "AssumeRoleWithWebIdentity")


@pytest.mark.parametrize(("status", "code"), [(400, "Throttling"), (429, "TooManyRequests"),
                                              (400, "TooManyRequestsException"),
                                              (429, "Unknown")],
                         ids=["Throttling", "429", "TooManyRequestsException", "bare-429"])
def test_aws_throttling_answers_are_retryable_throttling(status: int, code: str) -> None:
    """Every throttling shape is `throttled` and retryable: never a permanent failure."""
    error = _classify_client_error(_client_error(status, code), "aws_web_identity")
    assert (error.reason, error.retryable) == ("throttled", True)


def test_aws_retry_after_is_kept_in_seconds() -> None:
    """A `Retry-After: 7` header reaches the budget as 7 s; an HTTP date is ignored."""
    with_header = _classify_client_error(_client_error(429, "Unknown", {"retry-after": "7"}),
                                         "aws_web_identity")
    dated = _classify_client_error(
        _client_error(429, "Unknown", {"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}),
        "aws_web_identity")
    assert with_header.retry_after == 7.0
    assert dated.retry_after is None


def test_gcp_throttling_answers_are_retryable_throttling() -> None:
    """STS `rate_limit_exceeded` (429) and IAM `RESOURCE_EXHAUSTED` are throttling."""
    from google.auth import exceptions
    sts = classify_sts(exceptions.OAuthError(
        "Error code rate_limit_exceeded", '{"error": "rate_limit_exceeded", '
        '"error_description": "Quota exceeded"}'))
    iam = classify_iam(429, '{"error": {"status": "RESOURCE_EXHAUSTED", "message": "q"}}',
                       hop="gcp_iam")
    assert (sts.reason, sts.retryable) == ("throttled", True)
    assert (iam.reason, iam.retryable) == ("throttled", True)
