"""Caller JWT-SVIDs against the daemon process (issue 13, item 13): the same validator
as the bridge's own SVIDs refuses `iat` years ahead, `exp` a century ahead and `exp` as a
string; an unknown and a restricted target answer an unauthenticated caller alike."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest

from bridge._proto.spiffebridge.v1 import credentials_pb2 as pb
from bridge._proto.spiffebridge.v1 import credentials_pb2_grpc as pb_grpc
from bridge.devstack import DevStack
from tests.conftest import WriteConfig
from tests.support.configs import CALLER, aws_target
from tests.support.process import start_bridge, stop
from tests.support.wait import wait_for

pytestmark = pytest.mark.integration
YEAR = 365 * 86400


@pytest.fixture
def api(stack: DevStack, write_config: WriteConfig, outdir: Path,
        short_dir: Path) -> Iterator[pb_grpc.CredentialServiceStub]:
    """A `spiffe-bridge run` process with one guarded target; its gRPC stub."""
    config = write_config(targets=[aws_target(stack, "guarded", allowed_callers=[CALLER])])
    proc = start_bridge("run", "--config", str(config))
    try:
        wait_for((outdir / "aws" / "guarded.json").exists, "first credential")
        wait_for((short_dir / "bridge.sock").exists, "the gRPC socket")
        with grpc.insecure_channel(f"unix://{short_dir}/bridge.sock") as channel:
            yield pb_grpc.CredentialServiceStub(channel)
    finally:
        code, _, err = stop(proc)
    assert code == 0, err
    assert "Traceback" not in err


def _get(api: pb_grpc.CredentialServiceStub, target: str, token: str | None
         ) -> tuple[grpc.StatusCode, str]:
    metadata = (("authorization", f"Bearer {token}"),) if token is not None else ()
    try:
        api.GetCredential(pb.GetCredentialRequest(target=target), metadata=metadata,
                          timeout=10)
    except grpc.RpcError as exc:
        return exc.code(), exc.details() or ""  # type: ignore[attr-defined]
    return grpc.StatusCode.OK, ""


def test_a_valid_caller_svid_is_served(api: pb_grpc.CredentialServiceStub,
                                       stack: DevStack) -> None:
    """The control: an honest SVID for the bridge's audience gets the credential."""
    token = stack.authority.mint(CALLER, ["spiffe-bridge"], 300)
    assert _get(api, "guarded", token) == (grpc.StatusCode.OK, "")


@pytest.mark.parametrize(("claims", "says"), [
    (lambda now: {"iat": now + 10 * YEAR, "exp": now + 10 * YEAR + 300}, "iat is"),
    (lambda now: {"exp": now + 100 * YEAR}, "exp is"),
    (lambda now: {"exp": str(now + 300)}, "exp is not an integer"),
], ids=["iat-ten-years-ahead", "exp-a-century-ahead", "exp-as-a-string"])
def test_a_caller_svid_the_bridge_would_refuse_for_itself_is_refused(
        api: pb_grpc.CredentialServiceStub, stack: DevStack,
        claims: Callable[[int], dict[str, object]], says: str) -> None:
    """Validly signed by the trust domain, but with times no SPIRE server writes:
    UNAUTHENTICATED, saying which claim."""
    token = stack.authority.mint(CALLER, ["spiffe-bridge"], 300,
                                 extra_claims=claims(int(time.time())))
    code, details = _get(api, "guarded", token)
    assert code is grpc.StatusCode.UNAUTHENTICATED, details
    assert says in details


@pytest.mark.parametrize("token", [None, "not-a-jwt"], ids=["no-token", "garbage-token"])
def test_unknown_and_restricted_targets_answer_an_unauthenticated_caller_alike(
        api: pb_grpc.CredentialServiceStub, token: str | None) -> None:
    """Same status and same words for `guarded` and `no-such-target`: a caller without a
    valid SVID cannot learn which target names exist."""
    restricted = _get(api, "guarded", token)
    unknown = _get(api, "no-such-target", token)
    assert restricted[0] is grpc.StatusCode.UNAUTHENTICATED, restricted
    assert unknown == restricted
    assert "no-such-target" not in unknown[1]
