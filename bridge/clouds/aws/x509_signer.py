"""SigV4 with an X.509 key: IAM Roles Anywhere's `AWS4-X509-{ECDSA,RSA}-SHA256` scheme.

AWS's "IAM Roles Anywhere authentication signing process" is SigV4 with three changes:
the string to sign starts with the X.509 algorithm name; the signature is the
certificate key's own signature (ECDSA: ASN.1 DER; RSA: PKCS#1 v1.5) over SHA-256 of the
string to sign, hex-encoded, instead of an HMAC chain; and the credential is the
certificate's serial number in decimal, with `X-Amz-X509` (base64 DER leaf) and
`X-Amz-X509-Chain` (comma-separated base64 DER intermediates) added and signed.

Everything else (canonical URI, query, headers, signed-header list, payload hash) is
botocore's own `SigV4Auth`, so the canonical request is exactly the one every AWS SDK
computes; only the four methods that differ are replaced.
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Any

from botocore.auth import SIGV4_TIMESTAMP, SigV4Auth
from botocore.credentials import Credentials
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from bridge.x509_svid import X509Svid

SERVICE = "rolesanywhere"


class X509SigV4Auth(SigV4Auth):
    """Signs a botocore `AWSRequest` with an X.509-SVID, at `when` (epoch seconds)."""

    def __init__(self, svid: X509Svid, *, region: str, when: float) -> None:
        # The serial stands where the access key goes (the credential scope); there is
        # no secret: `signature` signs with the certificate's key instead.
        super().__init__(Credentials(str(svid.serial), ""), SERVICE, region)
        self._svid = svid
        self._when = when
        self.algorithm = f"AWS4-X509-{svid.key_kind}-SHA256"

    def add_auth(self, request: Any) -> None:
        request.context["timestamp"] = datetime.fromtimestamp(
            self._when, tz=UTC).strftime(SIGV4_TIMESTAMP)
        self._modify_request_before_signing(request)
        canonical_request = self.canonical_request(request)
        string_to_sign = self.string_to_sign(request, canonical_request)
        self._inject_signature_to_request(request, self.signature(string_to_sign, request))

    def _modify_request_before_signing(self, request: Any) -> None:
        # Authorization out, X-Amz-Date in (a private botocore hook, absent from stubs)
        super()._modify_request_before_signing(request)  # type: ignore[misc]
        for name in ("X-Amz-X509", "X-Amz-X509-Chain"):
            if name in request.headers:
                del request.headers[name]
        request.headers["X-Amz-X509"] = _b64(self._svid.leaf)
        if self._svid.intermediates:
            request.headers["X-Amz-X509-Chain"] = ",".join(
                _b64(d) for d in self._svid.intermediates)

    def string_to_sign(self, request: Any, canonical_request: str) -> str:
        hmac_form: str = super().string_to_sign(request, canonical_request)
        return self.algorithm + hmac_form[len("AWS4-HMAC-SHA256"):]

    def signature(self, string_to_sign: str, request: Any) -> str:
        return sign(self._svid.private_key, string_to_sign.encode()).hex()

    def _inject_signature_to_request(self, request: Any, signature: str) -> Any:
        headers_to_sign = self.headers_to_sign(request)
        request.headers["Authorization"] = (
            f"{self.algorithm} Credential={self.scope(request)}, "
            f"SignedHeaders={self.signed_headers(headers_to_sign)}, Signature={signature}")
        return request


def sign(private_key: Any, data: bytes) -> bytes:
    """The key's SHA-256 signature of `data` (ECDSA DER or RSA PKCS#1 v1.5)."""
    if isinstance(private_key, ec.EllipticCurvePrivateKey):
        return private_key.sign(data, ec.ECDSA(hashes.SHA256()))
    if isinstance(private_key, rsa.RSAPrivateKey):
        return private_key.sign(data, padding.PKCS1v15(), hashes.SHA256())
    raise ValueError(f"cannot sign with a {type(private_key).__name__} (ECDSA or RSA only)")


def _b64(der: bytes) -> str:
    return base64.b64encode(der).decode("ascii")
