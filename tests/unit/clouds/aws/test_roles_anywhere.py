"""The Roles Anywhere hop without a network: the request it signs, how it reads answers
and how it classifies refusals."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from bridge.clouds.aws.config import RolesAnywhereHopConfig
from bridge.clouds.aws.roles_anywhere import RolesAnywhereHop, classify, error_code
from bridge.devstack import X509Authority
from bridge.devstack._http import HttpRequest
from bridge.devstack.aws.roles_anywhere import canonical_request
from bridge.errors import ExchangeError
from bridge.x509_svid import X509Svid

WHEN = datetime(2026, 12, 3, 12, 0, 0, tzinfo=UTC).timestamp()
CONFIG = RolesAnywhereHopConfig(
    role_arn="arn:aws:iam::111122223333:role/x", region="eu-west-1",
    trust_anchor_arn="arn:aws:rolesanywhere:eu-west-1:111122223333:trust-anchor/a",
    profile_arn="arn:aws:rolesanywhere:eu-west-1:111122223333:profile/p")


def _svid(key_type: str = "ec-p256") -> X509Svid:
    issued = X509Authority("example.org", intermediate=True).mint(
        "spiffe://example.org/w", key_type=key_type)  # type: ignore[arg-type]
    leaf = x509.load_der_x509_certificate(issued.chain[0])
    return X509Svid(spiffe_id=issued.spiffe_id, chain=issued.chain,
                    private_key=issued.private_key,
                    expires_at=leaf.not_valid_after_utc.timestamp(),
                    issued_at=leaf.not_valid_before_utc.timestamp())


@pytest.mark.parametrize(("key_type", "algorithm"), [("ec-p256", "ECDSA"),
                                                     ("rsa-2048", "RSA")])
def test_the_request_is_signed_as_aws_documents(key_type: str, algorithm: str) -> None:
    """Recomputed independently (the emulator's canonicalisation), the signature verifies
    with the leaf's public key over AWS's string to sign."""
    svid = _svid(key_type)
    prepared = RolesAnywhereHop(CONFIG, timeout=1, http=object()).request(svid, when=WHEN)
    assert prepared.url == "https://rolesanywhere.eu-west-1.amazonaws.com/sessions"
    headers = {k.lower(): v for k, v in prepared.headers.items()}
    assert base64.b64decode(headers["x-amz-x509"]) == svid.leaf
    assert [base64.b64decode(p) for p in headers["x-amz-x509-chain"].split(",")] == list(
        svid.intermediates)
    assert headers["x-amz-date"] == "20261203T120000Z"
    auth = re.fullmatch(
        rf"AWS4-X509-{algorithm}-SHA256 Credential=(\d+)/(20261203/eu-west-1/rolesanywhere/"
        r"aws4_request), SignedHeaders=([a-z0-9;-]+), Signature=([0-9a-f]+)",
        headers["authorization"])
    assert auth is not None
    assert int(auth.group(1)) == svid.serial
    signed = auth.group(3).split(";")
    assert {"host", "x-amz-date", "x-amz-x509", "x-amz-x509-chain"} <= set(signed)
    headers.setdefault("host", "rolesanywhere.eu-west-1.amazonaws.com")
    body = prepared.body if isinstance(prepared.body, bytes) else prepared.body.encode()
    assert json.loads(body) == {"trustAnchorArn": CONFIG.trust_anchor_arn,
                                "profileArn": CONFIG.profile_arn,
                                "roleArn": CONFIG.role_arn, "durationSeconds": 3600}
    canonical = canonical_request(HttpRequest("POST", "/sessions", "", headers, body),
                                  headers, signed)
    to_sign = "\n".join([f"AWS4-X509-{algorithm}-SHA256", "20261203T120000Z", auth.group(2),
                         hashlib.sha256(canonical.encode()).hexdigest()]).encode()
    public = x509.load_der_x509_certificate(svid.leaf).public_key()
    signature = bytes.fromhex(auth.group(4))
    if isinstance(public, ec.EllipticCurvePublicKey):
        public.verify(signature, to_sign, ec.ECDSA(hashes.SHA256()))
    else:
        assert isinstance(public, rsa.RSAPublicKey)
        public.verify(signature, to_sign, padding.PKCS1v15(), hashes.SHA256())


@dataclass
class _Answer:
    status_code: int
    content: bytes
    headers: dict[str, str] = field(default_factory=dict)


class _Http:
    def __init__(self, answer: _Answer) -> None:
        self.answer = answer

    def send(self, prepared: Any) -> _Answer:
        return self.answer


def _exchange(answer: _Answer) -> Any:
    return RolesAnywhereHop(CONFIG, timeout=1, http=_Http(answer), now=lambda: WHEN).exchange(
        _svid())


def test_the_session_and_its_expiry_by_awss_clock() -> None:
    document = {"credentialSet": [{"credentials": {
        "accessKeyId": "ASIAEXAMPLEEXAMPLE", "secretAccessKey": "s" * 40,
        "sessionToken": "t" * 100, "expiration": "2026-12-03T13:00:00.000Z"},
        "assumedRoleUser": {"arn": "arn:aws:sts::111122223333:assumed-role/x/123"}}]}
    # AWS's Date is 10 minutes behind our clock and the expiration 70 minutes after it:
    # 70 minutes are left (less the Date's 1 s resolution), whatever our clock says.
    got = _exchange(_Answer(201, json.dumps(document).encode(),
                            {"Date": "Thu, 03 Dec 2026 11:50:00 GMT"}))
    assert got.access_key_id == "ASIAEXAMPLEEXAMPLE"
    assert got.region == "eu-west-1"
    assert got.assumed_role_arn.endswith("assumed-role/x/123")
    assert got.expires_at - WHEN == pytest.approx(4200 - 1)


def test_a_malformed_answer_hides_its_body() -> None:
    body = json.dumps({"credentialSet": [{"credentials": {"secretAccessKey": "hunter2" * 8}}]})
    with pytest.raises(ExchangeError) as caught:
        _exchange(_Answer(201, body.encode()))
    assert caught.value.reason == "malformed_response"
    assert "hunter2" not in str(caught.value)


@pytest.mark.parametrize(("code", "message", "status", "verdict"), [
    ("AccessDeniedException", "Untrusted signing certificate", 403,
     (False, "untrusted_certificate", False)),
    ("AccessDeniedException", "Certificate is expired", 403, (True, "certificate_expired", True)),
    ("AccessDeniedException", "Invalid signature", 403, (True, "bad_signature", True)),
    ("AccessDeniedException", "Signature expired: more than 5 minutes", 403,
     (True, "clock_skew", False)),
    ("AccessDeniedException", "Unable to assume role for arn:aws:iam::1:role/x", 403,
     (False, "access_denied", False)),
    ("AccessDeniedException", "Profile is not enabled", 403, (False, "bad_profile", False)),
    ("AccessDeniedException", "Not authorized to set roleSessionName.", 403,
     (False, "bad_session_name", False)),
    ("ResourceNotFoundException", "Profile not found", 404, (False, "not_found", False)),
    ("ValidationException", "1 validation error", 400, (False, "invalid_request", False)),
    ("ThrottlingException", "Rate exceeded", 429, (True, "throttled", False)),
    ("Unknown", "", 503, (True, "unavailable", False)),
    ("Unknown", "", 418, (False, "rejected", False)),
])
def test_classification(code: str, message: str, status: int,
                        verdict: tuple[bool, str, bool]) -> None:
    assert classify(code, message, status) == verdict


def test_error_code_from_header_or_body() -> None:
    assert error_code({"x-amzn-ErrorType": "AccessDeniedException:http://internal/"},
                      b'{"message": "m"}') == ("AccessDeniedException", "m")
    assert error_code({}, b'{"__type": "com.amazon#ValidationException", "Message": "v"}') == (
        "ValidationException", "v")
    assert error_code({}, b"<html>") == ("Unknown", "")
