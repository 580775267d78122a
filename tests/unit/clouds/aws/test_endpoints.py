"""The slim endpoint resolver (no `endpoints.json`) sends every STS request exactly where
botocore's own would, signed for the same region, in every region of every partition:
if a botocore release changes what the legacy resolver decides, this fails."""

from __future__ import annotations

from typing import Any

import botocore
import botocore.session
import pytest
from botocore.config import Config

from bridge.clouds.aws.endpoints import slim


class _Sent(Exception):  # carries the request out of botocore
    def __init__(self, request: Any) -> None:
        super().__init__()
        self.url = request.url
        self.scope = (request.headers.get("Authorization") or b"").split(b",")[0]


def _stop(request: Any, **_: object) -> None:
    raise _Sent(request)


def _where(session: Any, region: str, *, signed: bool, endpoint: str | None) -> tuple[Any, ...]:
    config = Config(signature_version=None if signed else botocore.UNSIGNED,
                    retries={"total_max_attempts": 1})
    client = session.create_client(
        "sts", region_name=region, endpoint_url=endpoint, config=config,
        aws_access_key_id="AKIDEXAMPLE" if signed else None,
        aws_secret_access_key="secret" if signed else None)
    client.meta.events.register("before-send", _stop)
    params: dict[str, str] = {"RoleArn": "arn:aws:iam::111122223333:role/r",
                              "RoleSessionName": "session"}
    call = client.assume_role if signed else client.assume_role_with_web_identity
    if not signed:
        params["WebIdentityToken"] = "x" * 20
    with pytest.raises(_Sent) as sent:
        call(**params)
    return sent.value.url, sent.value.scope, client.meta.region_name, client.meta.partition


def _regions() -> list[str]:
    partitions = botocore.session.get_session().get_component("data_loader").load_data(
        "partitions")
    return [r for p in partitions["partitions"] for r in p["regions"]]


def test_every_region_resolves_as_botocore_does() -> None:
    full, lean = botocore.session.get_session(), slim(botocore.session.get_session())
    regions = _regions()
    assert len(regions) > 30
    for region in regions:
        for signed in (False, True):
            for endpoint in (None, "https://sts.example.test"):
                mine = _where(lean, region, signed=signed, endpoint=endpoint)
                theirs = _where(full, region, signed=signed, endpoint=endpoint)
                assert mine == theirs, (region, signed, endpoint)


def test_the_slim_session_never_parses_endpoints_json(monkeypatch: pytest.MonkeyPatch) -> None:
    loaded: list[str] = []
    loader_class = type(botocore.session.get_session().get_component("data_loader"))
    original = loader_class.load_data_with_path

    def spy(self: Any, name: str, *args: Any, **kwargs: Any) -> Any:
        loaded.append(name)
        return original(self, name, *args, **kwargs)

    monkeypatch.setattr(loader_class, "load_data_with_path", spy)
    _where(slim(botocore.session.get_session()), "eu-west-1", signed=False, endpoint=None)
    assert "endpoints" not in loaded
    _where(botocore.session.get_session(), "eu-west-1", signed=False, endpoint=None)
    assert "endpoints" in loaded  # the spy sees botocore's own resolver load it
