"""Verifying an `aws4_request` subject token by replaying it to AWS STS. DEVELOPMENT ONLY.

The token is the URL-encoded JSON google-auth's `aws.Credentials` builds:
`{url, method, headers: [{key, value}], body?}`, a SigV4-signed
`POST https://sts.<region>.amazonaws.com?Action=GetCallerIdentity&Version=2011-06-15`.
Google verifies it by sending that request to AWS; this emulator sends it to the
provider's `sts_url` instead, same path, query, body and headers, including the
original `Host` (e.g. `sts.us-east-1.amazonaws.com`). SigV4 signs the Host header, not
the address connected to, so the signature still verifies wherever the request lands;
the AWS STS emulator recomputes it from the headers it receives. google-auth does not
sign `x-goog-cloud-target-resource`, but it must still name the provider. The
GetCallerIdentity `Arn` (an assumed-role ARN) becomes `google.subject`; its `Account`
must be the provider's account.
"""

from __future__ import annotations

import http.client
import json
import logging
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, unquote, urlsplit

from bridge.devstack.gcp.providers import AwsWorkloadProvider
from bridge.devstack.gcp.replies import StsError

_log = logging.getLogger(__name__)

_AWS_STS_HOST = re.compile(
    r"sts(?:-fips)?(?:\.[a-z0-9-]+)?\.amazonaws\.com(?:\.cn)?|sts\.[a-z0-9-]+\.api\.aws", re.ASCII
)
_MAX_AWS_RESPONSE = 1 << 16

AwsReplay = Callable[[str, Mapping[str, str], bytes, float], tuple[int, bytes]]
"""Sends a signed GetCallerIdentity: (url, headers, body, timeout) -> (status, body).

Raises OSError when the endpoint cannot be reached."""


def replay_signed_request(
    url: str, headers: Mapping[str, str], body: bytes, timeout: float
) -> tuple[int, bytes]:
    """POST `body` to `url` with exactly `headers` (their `Host` included), no proxies.

    http.client sends a caller-given Host header instead of the connected address,
    which is what keeps a SigV4 signature made for another host valid.

    Raises:
        OSError: connection failure, timeout or an unreadable response.
    """
    split = urlsplit(url)
    connection_class = (
        http.client.HTTPSConnection if split.scheme == "https" else http.client.HTTPConnection
    )
    connection = connection_class(split.hostname or "", split.port, timeout=timeout)
    target = (split.path or "/") + (f"?{split.query}" if split.query else "")
    try:
        connection.request("POST", target, body=body, headers=dict(headers))
        response = connection.getresponse()
        return response.status, response.read(_MAX_AWS_RESPONSE)
    except http.client.HTTPException as err:
        raise OSError(f"bad response from {split.hostname}: {type(err).__name__}") from err
    finally:
        connection.close()


@dataclass(frozen=True, slots=True)
class _SignedAwsRequest:
    url: str
    method: str
    headers: Mapping[str, str]
    body: bytes = field(repr=False)


def verify_aws(
    provider: AwsWorkloadProvider, token: str, *, replay: AwsReplay, timeout: float
) -> Mapping[str, str]:
    """Replay the signed GetCallerIdentity to `provider.sts_url`; returns arn/account/userid.

    Raises:
        StsError: invalid_request (unparseable token), invalid_grant (not a signed
            GetCallerIdentity, refused by AWS, another account), or
            temporarily_unavailable 503 (AWS STS unreachable).
    """
    signed = _parse_aws_token(token)
    url = urlsplit(signed.url)
    query = dict(parse_qsl(url.query))
    if (
        signed.method != "POST"
        or url.scheme != "https"
        or _AWS_STS_HOST.fullmatch(url.hostname or "") is None
        or query.get("Action") != "GetCallerIdentity"
        or query.get("Version") != "2011-06-15"
    ):
        raise StsError(
            "invalid_grant",
            "The subject token must be a signed POST to an AWS STS GetCallerIdentity URL.",
        )
    headers = {k.lower(): v for k, v in signed.headers.items()}
    if headers.get("host") != url.hostname or "authorization" not in headers:
        raise StsError("invalid_grant", "The AWS signed request lacks Host or Authorization.")
    if headers.get("x-goog-cloud-target-resource") not in (
        provider.audience,
        "https:" + provider.audience,
    ):
        raise StsError(
            "invalid_grant",
            "The x-goog-cloud-target-resource header does not match the audience.",
        )
    target = f"{provider.sts_url}{url.path or '/'}?{url.query}"
    try:
        status, body = replay(target, signed.headers, signed.body, timeout)
    except OSError as err:
        _log.debug("gcp sts: cannot reach AWS STS: %s", type(err).__name__)
        raise StsError(
            "temporarily_unavailable", "Unable to reach AWS STS to verify the token.", 503
        ) from err
    fields = _xml_fields(body, ("Arn", "Account", "UserId", "Code", "Message"))
    if status != 200:
        raise StsError(
            "invalid_grant",
            f"Received invalid AWS response of type {fields.get('Code', status)} with "
            f"error message: {fields.get('Message', '')}",
        )
    if not fields.get("Arn") or not fields.get("Account"):
        raise StsError("invalid_grant", "Received an invalid AWS GetCallerIdentity response.")
    if fields["Account"] != provider.account_id:
        raise StsError(
            "invalid_grant",
            f"The AWS account {fields['Account']} does not match the provider's account.",
        )
    return {"arn": fields["Arn"], "account": fields["Account"], "userid": fields.get("UserId", "")}


def _parse_aws_token(token: str) -> _SignedAwsRequest:
    """google-auth's `quote(json.dumps({url, method, headers: [{key, value}], body?}))`."""
    try:
        document = json.loads(unquote(token))
        headers = {str(h["key"]): str(h["value"]) for h in document["headers"]}
        url, method = document["url"], document["method"]
        body = document.get("body") or document.get("data") or ""
    except (ValueError, KeyError, TypeError) as err:
        raise StsError("invalid_request", "Unable to parse the AWS signed request.") from err
    if not isinstance(url, str) or not isinstance(method, str) or not isinstance(body, str):
        raise StsError("invalid_request", "Unable to parse the AWS signed request.")
    return _SignedAwsRequest(url=url, method=method.upper(), headers=headers, body=body.encode())


def _xml_fields(body: bytes, names: Iterable[str]) -> dict[str, str]:
    """First text of each named element, namespace-agnostic; {} for unparseable XML."""
    wanted = set(names)
    found: dict[str, str] = {}
    try:
        root = ET.fromstring(body)
    except ET.ParseError:
        return found
    for element in root.iter():
        local = element.tag.rsplit("}", 1)[-1]
        if local in wanted and local not in found and element.text:
            found[local] = element.text.strip()
    return found
