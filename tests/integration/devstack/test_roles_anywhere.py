"""The Roles Anywhere emulator refuses as AWS does, and the bridge's hop classifies each
refusal: the hop signs real requests (botocore's canonicalisation), the emulator
verifies them with its own."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from cryptography import x509

from bridge.clouds.aws.config import RolesAnywhereHopConfig
from bridge.clouds.aws.roles_anywhere import RolesAnywhereHop
from bridge.devstack import X509_ROLE_ARN, DevStack, X509Authority
from bridge.devstack.x509_authority import IssuedSvid
from bridge.errors import ExchangeError
from bridge.x509_svid import X509Svid

pytestmark = pytest.mark.integration
DEMO_ID = "spiffe://example.org/demo"


@pytest.fixture
def stack(short_dir: Path) -> Iterator[DevStack]:
    with DevStack(short_dir / "stack", x509=True) as started:
        yield started


def svid(issued: IssuedSvid) -> X509Svid:
    leaf = x509.load_der_x509_certificate(issued.chain[0])
    return X509Svid(spiffe_id=issued.spiffe_id, chain=issued.chain,
                    private_key=issued.private_key,
                    expires_at=leaf.not_valid_after_utc.timestamp(),
                    issued_at=leaf.not_valid_before_utc.timestamp())


def hop(stack: DevStack, **changes: object) -> RolesAnywhereHop:
    config = RolesAnywhereHopConfig(role_arn=X509_ROLE_ARN, region="us-east-1",
                                    trust_anchor_arn=stack.trust_anchor_arn,
                                    profile_arn=stack.profile_arn, endpoint=stack.aws_sts_url)
    return RolesAnywhereHop(replace(config, **changes), timeout=5)  # type: ignore[arg-type]


def refused(stack: DevStack, material: X509Svid, **changes: object) -> ExchangeError:
    with pytest.raises(ExchangeError) as caught:
        hop(stack, **changes).exchange(material)
    return caught.value


@pytest.mark.parametrize("key_type", ["ec-p256", "rsa-2048"])
def test_accepts_both_signing_schemes(stack: DevStack, key_type: str) -> None:
    """ECDSA and RSA leaves sign as AWS4-X509-ECDSA-SHA256 / AWS4-X509-RSA-SHA256."""
    assert stack.x509 is not None
    material = svid(stack.x509.mint(DEMO_ID, key_type=key_type))  # type: ignore[arg-type]
    credentials = hop(stack).exchange(material)
    assert credentials.assumed_role_arn.startswith(
        "arn:aws:sts::111122223333:assumed-role/x509-demo/")
    (request,) = stack.aws.roles_anywhere.requests
    algorithm = "ECDSA" if key_type.startswith("ec") else "RSA"
    assert request.headers["Authorization"].startswith(f"AWS4-X509-{algorithm}-SHA256 ")
    assert f"Credential={material.serial}/" in request.headers["Authorization"]


def test_certificate_from_another_ca(stack: DevStack) -> None:
    other = X509Authority("example.org")
    error = refused(stack, svid(other.mint(DEMO_ID)))
    assert (error.code, error.reason, error.retryable) == (
        "AccessDeniedException", "untrusted_certificate", False)
    assert "Untrusted signing certificate" in str(error)


def test_expired_certificate(stack: DevStack) -> None:
    assert stack.x509 is not None
    old = stack.x509.mint(DEMO_ID, ttl=600, not_before=time.time() - 7200)
    error = refused(stack, svid(old))
    assert (error.code, error.reason, error.retryable, error.fresh_svid) == (
        "AccessDeniedException", "certificate_expired", True, True)


def test_spiffe_id_the_trust_policy_does_not_allow(stack: DevStack) -> None:
    """The role trusts aws:PrincipalTag/x509SAN/URI like spiffe://example.org/*."""
    assert stack.x509 is not None
    error = refused(stack, svid(stack.x509.mint("spiffe://other.org/intruder")))
    assert (error.code, error.reason, error.retryable) == (
        "AccessDeniedException", "access_denied", False)
    assert f"Unable to assume role for {X509_ROLE_ARN}" in str(error)


def test_bad_signature(stack: DevStack) -> None:
    """A request signed with another key than the certificate's."""
    assert stack.x509 is not None
    good = svid(stack.x509.mint(DEMO_ID))
    forged = replace(good, private_key=stack.x509.mint(DEMO_ID).private_key)
    error = refused(stack, forged)
    assert (error.code, error.reason, error.retryable, error.fresh_svid) == (
        "AccessDeniedException", "bad_signature", True, True)


def test_wrong_profile(stack: DevStack) -> None:
    """An unknown profile is ResourceNotFound; one that does not list the role is denied."""
    assert stack.x509 is not None
    material = svid(stack.x509.mint(DEMO_ID))
    unknown = refused(stack, material, profile_arn=stack.profile_arn[:-4] + "0000")
    assert (unknown.code, unknown.reason, unknown.retryable) == (
        "ResourceNotFoundException", "not_found", False)
    other = stack.aws.roles_anywhere.add_profile(["arn:aws:iam::111122223333:role/other"])
    error = refused(stack, material, profile_arn=other)
    assert (error.code, error.reason, error.retryable) == (
        "AccessDeniedException", "bad_profile", False)


def test_session_name_only_when_the_profile_accepts_it(stack: DevStack) -> None:
    assert stack.x509 is not None
    error = refused(stack, svid(stack.x509.mint(DEMO_ID)), session_name="custom-name")
    assert (error.code, error.reason) == ("AccessDeniedException", "bad_session_name")


def test_signature_outside_the_five_minute_window(stack: DevStack) -> None:
    """A host clock 10 minutes fast: AWS refuses the date; a clock error, retried."""
    assert stack.x509 is not None
    late = RolesAnywhereHop(hop(stack)._config, timeout=5, now=lambda: time.time() + 600)
    with pytest.raises(ExchangeError) as caught:
        late.exchange(svid(stack.x509.mint(DEMO_ID)))
    assert (caught.value.reason, caught.value.retryable) == ("clock_skew", True)


def test_faults_and_throttling_are_retryable(stack: DevStack) -> None:
    from bridge.devstack.aws.roles_anywhere import CREATE_SESSION
    from bridge.devstack.faults import HttpFailure

    assert stack.x509 is not None
    stack.aws.faults.fail_next(CREATE_SESSION, HttpFailure(429, "ThrottlingException", "Rate"))
    error = refused(stack, svid(stack.x509.mint(DEMO_ID)))
    assert (error.code, error.reason, error.retryable) == ("ThrottlingException", "throttled",
                                                           True)
