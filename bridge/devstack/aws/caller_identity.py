"""GetCallerIdentity: who signed this request. DEVELOPMENT ONLY.

The bridge never calls it; boto3 tests do, and the GCP emulator replays google-auth's
`aws4_request` subject tokens here to learn the caller's ARN and account, as Google
does with AWS.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Mapping

from bridge.devstack._http import HttpRequest
from bridge.devstack.aws.authentication import authenticate
from bridge.devstack.aws.context import StsContext
from bridge.devstack.aws.documents import caller_identity_result


def get_caller_identity(
    context: StsContext, params: Mapping[str, str], request: HttpRequest
) -> ET.Element:
    """The caller's assumed-role ARN, role session ID and account.

    Raises:
        StsError: authentication failed (see `authentication`).
    """
    return caller_identity_result(authenticate(request, context.sessions, context.clock()))
