"""What every STS action works on, passed to each as one value. DEVELOPMENT ONLY.

The emulator owns the state; the actions (`web_identity`, `assume_role`,
`caller_identity`) are plain functions of (context, parameters, request), so each can
be read and tested on its own.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bridge.devstack._http import HttpRequest
from bridge.devstack.aws.roles import IamDirectory
from bridge.devstack.aws.sessions import SessionStore
from bridge.devstack.jwks import IssuerKeys

if TYPE_CHECKING:
    from bridge.devstack.aws.outbound_identity import OutboundFederation


@dataclass(frozen=True, slots=True)
class StsContext:
    """Providers and roles, issued sessions, issuers' keys, and the emulator's clock."""

    directory: IamDirectory
    sessions: SessionStore
    keys: IssuerKeys
    clock: Callable[[], float]
    outbound: OutboundFederation | None = None  # GetWebIdentityToken's issuer


Action = Callable[[StsContext, Mapping[str, str], HttpRequest], ET.Element]
"""One STS action: (context, request parameters, request) -> its `...Result` element.

Raises StsError for every error reply."""
