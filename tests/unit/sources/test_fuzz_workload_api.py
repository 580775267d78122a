"""Fuzzing the JWT-SVID checks: only a SourceError or an SVID that is actually valid.

Each example is served by the dev stack's fake agent (`WorkloadFaults.replace_svids`,
one call) and fetched through the production path, `WorkloadApiSource.fetch`: py-spiffe's
client and parser, then our own checks (length, sub, aud, integer times, margin, local
signature check against the streamed bundle). Inputs: arbitrary strings, mutations of a
valid token (characters flipped, cut, inserted; segments dropped, swapped, repeated),
and arbitrary claims and headers correctly signed by the trust domain's key. Anything
but a SourceError must be an SVID that satisfies every rule the bridge promises.
The agent runs in-process on a unix socket; no network, no cloud emulator.
"""

from __future__ import annotations

import json
import re
import shutil
import string
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from bridge.devstack import JwtAuthority, WorkloadApiServer
from bridge.errors import SourceError
from bridge.jwt_svid import LEEWAY
from bridge.model import JwtSvid
from bridge.sources.workload_api import MAX_SVID_LENGTH, WorkloadApiSource
from tests.support.forge import DROP, Forge

AUD = "sts.amazonaws.com"
COMPACT_JWS = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+", re.ASCII)
DEMO = "spiffe://example.org/demo"
FUZZ = settings(max_examples=250, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])


class Agent:
    def __init__(self, authority: JwtAuthority, server: WorkloadApiServer,
                 source: WorkloadApiSource) -> None:
        self.authority, self.server, self.source = authority, server, source
        self.forge = Forge(authority)

    def fetch(self, token: str, spiffe_id: str | None) -> JwtSvid | SourceError:
        self.server.faults.replace_svids(token, times=1)
        try:
            return self.source.fetch(AUD, spiffe_id)
        except SourceError as err:
            return err


@pytest.fixture(scope="module")
def agent() -> Iterator[Agent]:
    workdir = Path(tempfile.mkdtemp(prefix="sbf-", dir="/tmp"))
    authority = JwtAuthority("example.org")
    server = WorkloadApiServer(authority, workdir / "agent.sock", identities=(DEMO,))
    server.start()
    source = WorkloadApiSource(server.uri, timeout=5, now=time.time)
    try:
        yield Agent(authority, server, source)
    finally:
        source.close()
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def assert_valid(result: JwtSvid | SourceError, token: str, agent: Agent,
                 spiffe_id: str | None) -> None:
    """A result that is not an error must meet every rule (what py-spiffe and we check)."""
    if isinstance(result, SourceError):
        event(f"SourceError {result.reason}")
        assert result.reason, "every SourceError is classified"
        assert isinstance(result.retryable, bool)
        assert len(token) < 12 or token[:40] not in result.detail
        return
    event("valid SVID")
    now = time.time()
    assert isinstance(result, JwtSvid)
    assert result.token == token
    assert len(token) <= MAX_SVID_LENGTH
    assert COMPACT_JWS.fullmatch(token), "three unpadded base64url segments (RFC 7515)"
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "ES256"
    assert header["kid"] in agent.authority.kids
    assert set(header) <= {"alg", "kid", "typ"}
    assert header.get("typ", "JWT") in ("JWT", "JOSE")
    claims = jwt.decode(token, agent.authority.active_key.public_key, algorithms=["ES256"],
                        audience=AUD, options={"verify_iat": False, "verify_nbf": False})
    # (`nbf` is judged below with the bridge's leeway; pyjwt's own check has none)
    assert claims["sub"] == (spiffe_id or claims["sub"])
    assert claims["sub"].startswith("spiffe://example.org/")
    assert claims["aud"] in (AUD, [AUD])
    for name in ("exp", "iat", "nbf"):
        value = claims.get(name)
        assert value is None or (isinstance(value, int) and not isinstance(value, bool))
    assert claims["exp"] - now >= 30 - 1
    assert result.expires_at == float(claims["exp"])
    for name in ("iat", "nbf"):
        if name in claims:
            assert claims[name] <= now + LEEWAY + 1


def test_the_fuzz_rig_accepts_a_good_svid(agent: Agent) -> None:
    token = agent.forge.token(DEMO, AUD)
    result = agent.fetch(token, DEMO)
    assert isinstance(result, JwtSvid), result
    assert result.token == token
    assert COMPACT_JWS.fullmatch(token)


TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=300)
B64ISH = st.text(string.ascii_letters + string.digits + "-_=+/.", max_size=200)
SPIFFE_IDS = st.one_of(st.none(), st.just(DEMO))


@FUZZ
@given(text=st.one_of(TEXT, B64ISH), spiffe_id=SPIFFE_IDS)
def test_arbitrary_strings(agent: Agent, text: str, spiffe_id: str | None) -> None:
    assert_valid(agent.fetch(text, spiffe_id), text, agent, spiffe_id)


@st.composite
def mutated_tokens(draw: st.DrawFn, forge: Forge) -> str:
    token = forge.token(DEMO, AUD)
    for _ in range(draw(st.integers(1, 3))):
        how = draw(st.sampled_from(["flip", "cut", "insert", "drop-seg", "swap-seg",
                                    "dup-seg", "pad", "case"]))
        segments = token.split(".")
        if how == "flip" and token:
            i = draw(st.integers(0, len(token) - 1))
            token = token[:i] + draw(st.sampled_from(list("A_-.=+/ \n\x00é"))) + token[i + 1:]
        elif how == "cut":
            i, j = sorted((draw(st.integers(0, len(token))), draw(st.integers(0, len(token)))))
            token = token[:i] + token[j:]
        elif how == "insert":
            i = draw(st.integers(0, len(token)))
            token = token[:i] + draw(B64ISH) + token[i:]
        elif how == "drop-seg" and len(segments) > 1:
            del segments[draw(st.integers(0, len(segments) - 1))]
            token = ".".join(segments)
        elif how == "swap-seg" and len(segments) > 1:
            i, j = draw(st.integers(0, len(segments) - 1)), draw(st.integers(0, len(segments) - 1))
            segments[i], segments[j] = segments[j], segments[i]
            token = ".".join(segments)
        elif how == "dup-seg":
            segments.insert(draw(st.integers(0, len(segments))),
                            draw(st.sampled_from(segments)))
            token = ".".join(segments)
        elif how == "pad":
            token += draw(st.sampled_from(["=", "==", ".", "\n", " ", "\t"]))
        elif how == "case":
            token = token.swapcase()
    return token


@FUZZ
@given(data=st.data(), spiffe_id=SPIFFE_IDS)
def test_mutated_valid_tokens(agent: Agent, data: st.DataObject, spiffe_id: str | None) -> None:
    token = data.draw(mutated_tokens(agent.forge))
    assert_valid(agent.fetch(token, spiffe_id), token, agent, spiffe_id)


def _now() -> int:
    return int(time.time())


NUMBERS = st.one_of(
    st.integers(min_value=-(2**64), max_value=2**80),
    st.floats(allow_nan=True, allow_infinity=True),
    st.builds(lambda d: _now() + d, st.integers(-4000, 4000)),
    st.builds(lambda d: float(_now() + d), st.integers(-4000, 4000)),
    st.builds(lambda d: str(_now() + d), st.integers(-4000, 4000)),
)
JSONISH = st.recursive(
    st.one_of(st.none(), st.booleans(), NUMBERS, TEXT),
    lambda inner: st.one_of(st.lists(inner, max_size=3),
                            st.dictionaries(st.text(max_size=5), inner, max_size=3)),
    max_leaves=8)
SUBS = st.one_of(st.just(DEMO), st.sampled_from([
    DEMO, "spiffe://example.org/other", "spiffe://example.org", "spiffe://Example.org/demo",
    "spiffe://evil.example/demo", "spiffe://example.org/demo/", "spiffe://example.org//demo",
    "spiffe://example.org/./demo", "spiffe://example.org/%64emo", "spiffe://exa mple.org/d",
    "spiffe:/example.org/demo", "SPIFFE://example.org/demo", "demo", "", DEMO + "\n",
    "spiffe://example.org/" + "a" * 2100]), JSONISH)
AUDS = st.one_of(st.just([AUD]), st.sampled_from([
    AUD, [AUD], [AUD, AUD], [AUD, "other"], ["other"], [], "", [""], AUD.upper(), [[AUD]],
    {"aud": AUD}]), JSONISH)
EXPS = st.one_of(st.builds(lambda d: _now() + d, st.integers(-120, 4000)),
                 st.builds(lambda d: _now() + d, st.integers(31, 4000)), NUMBERS, JSONISH)


@st.composite
def claim_sets(draw: st.DrawFn) -> dict[str, Any]:
    """Half the time a sane SVID with one claim gone wild, else every claim wild."""
    wild = {"sub": SUBS, "aud": AUDS, "exp": EXPS, "iat": NUMBERS, "nbf": NUMBERS,
            "iss": JSONISH, "jti": JSONISH}
    claims: dict[str, Any]
    if draw(st.booleans()):
        now = _now()
        claims = {"sub": DEMO, "aud": [AUD], "exp": now + draw(st.integers(31, 4000))}
        if draw(st.booleans()):
            claims["iat"] = now - draw(st.integers(0, 100))
        if draw(st.booleans()):
            name = draw(st.sampled_from(sorted(wild)))
            claims[name] = draw(wild[name])
    else:
        claims = {}
        for name, values in wild.items():
            keep = draw(st.floats(0, 1)) < (0.95 if name in ("sub", "aud", "exp") else 0.3)
            if keep:
                claims[name] = draw(values)
    if draw(st.booleans()):
        claims.update(draw(st.dictionaries(st.text(max_size=6), JSONISH, max_size=2)))
    return claims


HEADERS = st.fixed_dictionaries({}, optional={
    "typ": st.sampled_from(["JWT", "JOSE", "jwt", "at+jwt", "", DROP, 1]),
    "cty": st.sampled_from(["JWT", "json"]),
    "crit": st.sampled_from([["exp"], [], "exp"]),
    "jku": st.just("https://evil.example/jwks"),
    "x5u": st.just("https://evil.example/cert"),
    "zip": st.just("DEF"),
    "b64": st.booleans(),
})


def _serialisable(value: object) -> bool:
    try:
        json.dumps(value)  # NaN and Infinity included: Python's json reads them back
    except (ValueError, TypeError, RecursionError):
        return False
    return True


@FUZZ
@given(claims=claim_sets(), extra_header=HEADERS, spiffe_id=SPIFFE_IDS,
       kid=st.sampled_from(["active", "active", "active", "missing", "empty", "other", "int"]))
def test_arbitrary_claims_signed_by_the_trust_domain(
        agent: Agent, claims: dict[str, Any], extra_header: dict[str, Any],
        spiffe_id: str | None, kid: str) -> None:
    assume(_serialisable(claims))
    kids = {"active": agent.authority.active_kid, "missing": DROP, "empty": "",
            "other": "x" * 32, "int": 7}
    header = agent.forge.header(**extra_header, kid=kids[kid])
    token = agent.forge.es256(claims, header)
    assert_valid(agent.fetch(token, spiffe_id), token, agent, spiffe_id)
