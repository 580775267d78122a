"""AWS Signature Version 4, recomputed from a request as received. DEVELOPMENT ONLY.

The signature covers the headers named in SignedHeaders, taken verbatim (`Host`
included), not the address the request reached. So a request signed for
`sts.us-east-1.amazonaws.com` still verifies when it is replayed here with its original
`Host` header: that is how the GCP emulator checks google-auth's `aws4_request`
subject tokens (it replays them to this emulator, which verifies them here).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from urllib.parse import parse_qsl, quote, unquote

_AUTHORIZATION = re.compile(
    r"AWS4-HMAC-SHA256\s+Credential=(?P<key>[^/\s,]+)/(?P<scope>\d{8}/[^/\s,]+/[^/\s,]+/aws4_request)"
    r"\s*,\s*SignedHeaders=(?P<signed>[a-z0-9;_.-]+)\s*,\s*Signature=(?P<signature>[0-9a-f]{64})",
    re.ASCII,
)


@dataclass(frozen=True, slots=True)
class Authorization:
    """The parts of an `Authorization: AWS4-HMAC-SHA256 ...` header."""

    access_key_id: str
    scope: str
    signed_headers: tuple[str, ...]
    signature: str

    @property
    def date_stamp(self) -> str:
        """`YYYYMMDD`, the scope's first part."""
        return self.scope.split("/")[0]

    @property
    def service(self) -> str:
        """The scope's service, `sts` for STS."""
        return self.scope.split("/")[2]


def parse_authorization(value: str) -> Authorization | None:
    """The header's parts, or None when it is not a complete SigV4 header."""
    match = _AUTHORIZATION.fullmatch(value.strip())
    if match is None:
        return None
    return Authorization(
        access_key_id=match.group("key"),
        scope=match.group("scope"),
        signed_headers=tuple(match.group("signed").split(";")),
        signature=match.group("signature"),
    )


def sigv4_signature(
    secret_access_key: str,
    *,
    method: str,
    path: str,
    query: str,
    headers: Mapping[str, str],
    body: bytes,
    signed_headers: Iterable[str],
    amz_date: str,
    scope: str,
) -> str:
    """The hex SigV4 signature of a request as received (AWS's canonical-request rules).

    `headers` must have lower-case names; `scope` is `date/region/service/aws4_request`.
    Values are trimmed and inner whitespace collapsed; the payload hash is
    `x-amz-content-sha256` when sent, else SHA-256 of the body.
    """
    names = list(signed_headers)
    canonical_uri = quote(unquote(path or "/"), safe="/-_.~")
    pairs = sorted(
        (quote(k, safe="-_.~"), quote(v, safe="-_.~"))
        for k, v in parse_qsl(query, keep_blank_values=True)
    )
    canonical_query = "&".join(f"{k}={v}" for k, v in pairs)
    canonical_headers = "".join(f"{n}:{' '.join(headers.get(n, '').split())}\n" for n in names)
    payload_hash = headers.get("x-amz-content-sha256") or hashlib.sha256(body).hexdigest()
    canonical_request = "\n".join(
        [method, canonical_uri, canonical_query, canonical_headers, ";".join(names), payload_hash]
    )
    string_to_sign = "\n".join(
        [
            "AWS4-HMAC-SHA256",
            amz_date,
            scope,
            hashlib.sha256(canonical_request.encode()).hexdigest(),
        ]
    )
    key = ("AWS4" + secret_access_key).encode()
    for part in scope.split("/"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return hmac.new(key, string_to_sign.encode(), hashlib.sha256).hexdigest()
