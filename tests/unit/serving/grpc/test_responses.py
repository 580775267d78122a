"""GetCredential's serialized-response cache: a new store value is served at once, and a
cached response never outlives its credential's hand-out deadline."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from typing import Any

import grpc
import pytest
from prometheus_client import CollectorRegistry

from bridge._proto.spiffebridge.v1 import credentials_pb2 as pb
from bridge.app.daemon import served_target
from bridge.clouds.aws import AwsHopConfig
from bridge.config import TargetConfig
from bridge.metrics import Metrics
from bridge.model import Credential
from bridge.serving.grpc.callers import CallerVerifier
from bridge.serving.grpc.changes import Changes
from bridge.serving.grpc.servicer import CredentialServicer
from bridge.store import CredentialStore
from tests.support.values import aws_credential

TARGET = "t"


def _credential(mono: float) -> Credential:
    """A credential valid for an hour, its hand-out deadline on the monotonic clock."""
    return replace(aws_credential(TARGET, now=time.time()), deadline=mono + 3600,
                   received=mono)


class _Context:
    def invocation_metadata(self) -> tuple[()]:
        return ()

    async def abort(self, code: grpc.StatusCode, details: str) -> Any:
        raise RuntimeError(code)


def test_cache_follows_the_store_and_the_deadline() -> None:
    async def main() -> None:
        clock = [time.monotonic()]
        store = CredentialStore([TARGET])
        first = _credential(clock[0])
        store.succeeded(TARGET, first, time.time())
        target = TargetConfig(name=TARGET, audience="sts.amazonaws.com", hops=(AwsHopConfig(
            role_arn="arn:aws:iam::111122223333:role/bench", region="us-east-1"),))
        servicer = CredentialServicer(
            {TARGET: served_target(target)}, status=store.get, now=lambda: clock[0],
            verifier=CallerVerifier(lambda: None, audience="x", now=time.time),
            metrics=Metrics(CollectorRegistry()),
            changes=Changes(asyncio.get_running_loop(), [TARGET]), max_watchers=1)
        request = pb.GetCredentialRequest(target=TARGET)
        body = await servicer.GetCredential(request, _Context())
        assert pb.GetCredentialResponse.FromString(body).credential.aws.session_token
        second = replace(first, material=replace(first.material, session_token="n" * 700))
        store.succeeded(TARGET, second, time.time())
        body = await servicer.GetCredential(request, _Context())
        assert pb.GetCredentialResponse.FromString(body).credential.aws.session_token == (
            "n" * 700)
        clock[0] = second.deadline  # the hand-out deadline: nothing served from the cache
        with pytest.raises(RuntimeError, match="UNAVAILABLE"):
            await servicer.GetCredential(request, _Context())
    asyncio.run(main())
