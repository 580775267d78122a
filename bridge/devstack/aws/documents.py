"""The XML documents STS answers with (query protocol, 2011-06-15). DEVELOPMENT ONLY.

Every reply is `<{Action}Response xmlns=...>` with the action's result and a
`ResponseMetadata/RequestId`, or an `<ErrorResponse>` whose `Type` is Sender for 4xx and
Receiver for 5xx: the shapes botocore parses.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from bridge.devstack.aws.errors import StsError
from bridge.devstack.aws.roles import TrustedRole
from bridge.devstack.aws.sessions import IssuedCredentials

STS_NAMESPACE = "https://sts.amazonaws.com/doc/2011-06-15/"


def _sub(parent: ET.Element, tag: str, text: str | None = None) -> ET.Element:
    element = ET.SubElement(parent, tag)
    if text is not None:
        element.text = text
    return element


def _credentials(result: ET.Element, credentials: IssuedCredentials) -> None:
    """The `Credentials` both AssumeRole actions return."""
    creds = _sub(result, "Credentials")
    _sub(creds, "AccessKeyId", credentials.access_key_id)
    _sub(creds, "SecretAccessKey", credentials.secret_access_key)
    _sub(creds, "SessionToken", credentials.session_token)
    _sub(creds, "Expiration", credentials.expiration.strftime("%Y-%m-%dT%H:%M:%SZ"))


def _assumed_role_user(
    result: ET.Element, credentials: IssuedCredentials, assumed_role_id: str
) -> None:
    user = _sub(result, "AssumedRoleUser")
    _sub(user, "AssumedRoleId", assumed_role_id)
    _sub(user, "Arn", credentials.assumed_role_arn)


def web_identity_result(
    credentials: IssuedCredentials,
    role: TrustedRole,
    *,
    subject: str,
    audience: str,
    provider: str,
    packed_policy_size: int | None,
) -> ET.Element:
    """`AssumeRoleWithWebIdentityResult`."""
    result = ET.Element("AssumeRoleWithWebIdentityResult")
    _credentials(result, credentials)
    _sub(result, "SubjectFromWebIdentityToken", subject)
    _assumed_role_user(result, credentials, f"{role.role_id}:{credentials.session_name}")
    if packed_policy_size is not None:
        _sub(result, "PackedPolicySize", str(packed_policy_size))
    _sub(result, "Audience", audience)
    _sub(result, "Provider", provider)
    return result


def assume_role_result(
    credentials: IssuedCredentials, *, packed_policy_size: int | None
) -> ET.Element:
    """`AssumeRoleResult`."""
    result = ET.Element("AssumeRoleResult")
    _credentials(result, credentials)
    _assumed_role_user(result, credentials, credentials.assumed_role_id)
    if packed_policy_size is not None:
        _sub(result, "PackedPolicySize", str(packed_policy_size))
    return result


def caller_identity_result(caller: IssuedCredentials) -> ET.Element:
    """`GetCallerIdentityResult`."""
    result = ET.Element("GetCallerIdentityResult")
    _sub(result, "Arn", caller.assumed_role_arn)
    _sub(result, "UserId", caller.assumed_role_id)
    _sub(result, "Account", caller.account)
    return result


def response_document(action: str, result: ET.Element, request_id: str) -> bytes:
    """A success reply around `result`."""
    root = ET.Element(f"{action}Response", {"xmlns": STS_NAMESPACE})
    root.append(result)
    metadata = _sub(root, "ResponseMetadata")
    _sub(metadata, "RequestId", request_id)
    return _serialize(root)


def error_document(err: StsError, request_id: str) -> bytes:
    """An `<ErrorResponse>` for `err`."""
    root = ET.Element("ErrorResponse", {"xmlns": STS_NAMESPACE})
    error = _sub(root, "Error")
    _sub(error, "Type", "Sender" if err.status < 500 else "Receiver")
    _sub(error, "Code", err.code)
    _sub(error, "Message", err.message)
    _sub(root, "RequestId", request_id)
    return _serialize(root)


def _serialize(root: ET.Element) -> bytes:
    data: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=False)
    return data
