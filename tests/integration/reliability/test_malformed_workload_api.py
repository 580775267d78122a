"""Malformed Workload API answers: each is a clear, classified SourceError, never an exchange.

Every case is served by the dev stack's fake agent through its fault switches
(`replace_svids`, `replace_svid_list`, `replace_bundles`) and met twice:

1. by the source alone (`WorkloadApiSource.fetch`, py-spiffe underneath): a SourceError
   with the expected reason and retryability whose text names the problem;
2. by a whole `spiffe-bridge once` run with an AWS and a GCP target: exit 1, both summary
   lines FAILED naming the problem, no traceback, neither the AWS nor the GCP emulator
   received any request, and no summary line, log record (raw, before redaction) or
   error text contains the token that was served.

Classification (PROTOCOLS §1-§2, RELIABILITY (a) 1-6): a bad token or bundle from the
agent is retryable (`invalid_svid`, `invalid_bundle`, `svid_expiring`): the agent may
mint a good one next time, and nothing in our request was wrong (that would be the
spec's InvalidArgument, which is permanent and covered in test_source_and_hop.py).
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from bridge.cli import main
from bridge.devstack import DevStack, SvidEntry
from bridge.errors import SourceError
from bridge.sources.workload_api import WorkloadApiSource
from tests.integration.reliability.conftest import DEMO, OTHER
from tests.support.forge import DROP, Forge, b64url

pytestmark = pytest.mark.integration
AWS_AUDIENCE = "sts.amazonaws.com"


class Served:
    """Records every token the faulty agent handed out, to prove none leaks."""

    def __init__(self, stack: DevStack) -> None:
        self.stack = stack
        self.forge = Forge(stack.authority)
        self.faults = stack.workload.faults
        self._lock = threading.Lock()
        self.tokens: list[str] = []

    def record(self, token: str) -> str:
        with self._lock:
            self.tokens.append(token)
        return token

    def fragments(self) -> set[str]:
        """Every token, and every part of one, long enough to be recognisable."""
        with self._lock:
            tokens = list(self.tokens)
        parts = {t for t in tokens if len(t) >= 12}
        parts |= {p for t in tokens for p in t.split(".") if len(p) >= 12}
        return parts


TokenMaker = Callable[[Forge, str, str], str]  # (forge, sub asked for, audience) -> token


def svids(make: TokenMaker) -> Callable[[Served], None]:
    """Serve one forged token per identity, built for the requested audience."""
    def install(s: Served) -> None:
        s.faults.replace_svids(lambda sid, aud: s.record(make(s.forge, sid, aud[0])))
    return install


def answer(make: Callable[[Forge, str, str], list[SvidEntry]]) -> Callable[[Served], None]:
    """Serve a whole FetchJWTSVID answer (the list of JWTSVID messages) as given."""
    def install(s: Served) -> None:
        def entries(wanted: str, aud: tuple[str, ...]) -> list[SvidEntry]:
            built = make(s.forge, wanted or DEMO, aud[0])
            for e in built:
                s.record(e.svid)
            return built
        s.faults.replace_svid_list(entries)
    return install


def bundles(make: Callable[[Forge], dict[str, bytes]]) -> Callable[[Served], None]:
    """Stream a forged bundle map; the SVIDs themselves are honest (and recorded)."""
    def install(s: Served) -> None:
        authority = s.stack.authority
        s.faults.replace_svids(lambda sid, aud: s.record(authority.mint(sid, list(aud), 300)))
        s.faults.replace_bundles(make(s.forge))
    return install


def _now() -> int:
    return int(time.time())


def _honest(f: Forge, sub: str, aud: str) -> str:
    return f.token(sub, aud)


def _segments(f: Forge, sub: str, aud: str) -> list[str]:
    return _honest(f, sub, aud).split(".")


def _jwks(doc: object) -> bytes:
    return json.dumps(doc).encode()


@dataclass(frozen=True)
class Case:
    id: str
    install: Callable[[Served], None]
    problem: str  # a regex the error text must match: it names the problem
    reason: str = "invalid_svid"
    retryable: bool = True
    serves_token: bool = True  # False: the answer holds no token at all


CASES = [
    # -- header ------------------------------------------------------------------------
    Case("alg-none", svids(lambda f, s, a: f.unsigned(s, a)),
         r"Algorithm not supported: none"),
    Case("alg-hs256-keyed-with-the-public-key", svids(lambda f, s, a: f.hs256(s, a)),
         r"Algorithm not supported: HS256"),
    Case("rs256-unknown-kid", svids(lambda f, s, a: f.rs256_unknown_kid(s, a)),
         r"Authority not found for key ID: not-in-the-bundle"),
    Case("es256-kid-not-in-bundle",
         svids(lambda f, s, a: f.unpublished_key(s, a, same_kid=False)),
         r"Authority not found for key ID"),
    Case("signed-by-a-key-not-in-the-bundle-same-kid",
         svids(lambda f, s, a: f.unpublished_key(s, a, same_kid=True)),
         r"Signature verification failed"),
    Case("kid-missing", svids(lambda f, s, a: f.token(s, a, header=f.header(kid=DROP))),
         r"key_id cannot be empty"),
    Case("kid-empty", svids(lambda f, s, a: f.token(s, a, header=f.header(kid=""))),
         r"key_id cannot be empty"),
    Case("kid-not-a-string", svids(lambda f, s, a: f.token(s, a, header=f.header(kid=7))),
         r"Key ID header parameter must be a string"),
    Case("typ-not-jwt", svids(lambda f, s, a: f.token(s, a, header=f.header(typ="at+jwt"))),
         r"Token type not supported: at\+jwt"),
    Case("typ-empty", svids(lambda f, s, a: f.token(s, a, header=f.header(typ=""))),
         r"typ must be JWT or JOSE"),
    Case("header-jku-pointing-elsewhere",
         svids(lambda f, s, a: f.token(s, a, header=f.header(jku="https://evil.example/k"))),
         r"header parameters jku are not allowed"),
    # -- exp / iat / nbf -----------------------------------------------------------------
    Case("exp-missing", svids(lambda f, s, a: f.token(s, a, exp=DROP)),
         r"Missing required claim: exp"),
    Case("exp-in-the-past",
         svids(lambda f, s, a: f.token(s, a, iat=_now() - 900, exp=_now() - 600)),
         r"Token has expired"),
    Case("exp-as-numeric-string", svids(lambda f, s, a: f.token(s, a, exp=str(_now() + 300))),
         r"exp is not an integer"),
    Case("exp-as-word", svids(lambda f, s, a: f.token(s, a, exp="tomorrow")),
         r"exp claim must be a numeric value"),
    Case("exp-as-float", svids(lambda f, s, a: f.token(s, a, exp=_now() + 300.5)),
         r"exp is not an integer"),
    Case("exp-inside-the-30s-margin", svids(lambda f, s, a: f.token(s, a, exp=_now() + 10)),
         r"expires in \d+s, less than the 30s margin", reason="svid_expiring"),
    Case("iat-in-the-future",
         svids(lambda f, s, a: f.token(s, a, iat=_now() + 3600, exp=_now() + 3900)),
         r"iat is \d+s in the future"),
    Case("iat-as-string", svids(lambda f, s, a: f.token(s, a, iat="now")),
         r"iat is not an integer"),
    Case("nbf-in-the-future", svids(lambda f, s, a: f.token(s, a, nbf=_now() + 3600)),
         r"nbf is \d+s in the future"),
    # -- aud -----------------------------------------------------------------------------
    Case("aud-missing", svids(lambda f, s, a: f.token(s, a, aud=DROP)),
         r"Missing required claim: aud"),
    Case("aud-empty-list", svids(lambda f, s, a: f.token(s, a, aud=[])),
         r"Missing required claim: aud"),
    Case("aud-wrong", svids(lambda f, s, a: f.token(s, a, aud=["someone-else"])),
         r"audience does not match"),
    Case("aud-list-without-ours", svids(lambda f, s, a: f.token(s, a, aud=["x", "y"])),
         r"audience does not match"),
    Case("aud-ours-plus-others-replayable",
         svids(lambda f, s, a: f.token(s, a, aud=[a, "https://elsewhere.example"])),
         r"aud must be exactly"),
    # -- sub -----------------------------------------------------------------------------
    Case("sub-missing", svids(lambda f, s, a: f.token(s, a, sub=DROP)),
         r"Missing required claim: sub"),
    Case("sub-not-a-spiffe-id", svids(lambda f, s, a: f.token(s, a, sub="demo")),
         r"Invalid SPIFFE ID"),
    Case("sub-in-a-foreign-trust-domain",
         svids(lambda f, s, a: f.token(s, a, sub="spiffe://evil.example/demo")),
         r"sub is spiffe://evil\.example/demo, not the requested"),
    Case("sub-not-canonical-uppercase-trust-domain",
         svids(lambda f, s, a: f.token(s, a, sub="spiffe://Example.org/demo")),
         r"sub is not a canonical SPIFFE ID"),
    Case("sub-another-identity-than-requested",
         svids(lambda f, s, a: f.token(s, a, sub=OTHER)),
         r"sub is spiffe://example\.org/other, not the requested spiffe://example\.org/demo"),
    # -- encoding ------------------------------------------------------------------------
    Case("oversized-70KiB-validly-signed",
         svids(lambda f, s, a: f.token(s, a, pad="x" * 70_000)),
         r"JWT-SVID is \d+ characters, over the 20000"),
    Case("bad-base64-header",
         svids(lambda f, s, a: ".".join(["!!!", *_segments(f, s, a)[1:]])),
         r"Invalid header padding"),
    Case("bad-base64-payload",
         svids(lambda f, s, a: ".".join([_segments(f, s, a)[0], "!!!",
                                         _segments(f, s, a)[2]])),
         r"Invalid payload padding"),
    Case("bad-base64-signature",
         svids(lambda f, s, a: ".".join([*_segments(f, s, a)[:2], "!!!"])),
         r"Invalid crypto padding"),
    Case("payload-not-json",
         svids(lambda f, s, a: ".".join([_segments(f, s, a)[0], b64url(b"not json"),
                                         _segments(f, s, a)[2]])),
         r"Invalid payload string"),
    Case("payload-json-but-not-an-object",
         svids(lambda f, s, a: ".".join([_segments(f, s, a)[0], b64url(b"[1, 2]"),
                                         _segments(f, s, a)[2]])),
         r"must be a json object"),
    Case("truncated-two-segments", svids(lambda f, s, a: ".".join(_segments(f, s, a)[:2])),
         r"Not enough segments"),
    Case("extra-fourth-segment",
         svids(lambda f, s, a: _honest(f, s, a) + "." + _segments(f, s, a)[2]),
         r"Invalid payload padding"),
    Case("empty-token", svids(lambda f, s, a: ""), r"token cannot be empty"),
    Case("base64-padding-on-the-signature", svids(lambda f, s, a: _honest(f, s, a) + "=="),
         r"not a JWS compact serialization"),
    Case("trailing-newline", svids(lambda f, s, a: _honest(f, s, a) + "\n"),
         r"Invalid crypto padding"),
    Case("nul-byte", svids(lambda f, s, a: _honest(f, s, a) + "\x00"),
         r"Invalid crypto padding"),
    Case("jws-json-serialization",
         svids(lambda f, s, a: json.dumps(dict(zip(("protected", "payload", "signature"),
                                                   _segments(f, s, a), strict=True)))),
         r"Not enough segments"),
    # -- the FetchJWTSVID answer as a whole -------------------------------------------------
    Case("empty-svid-list", answer(lambda f, s, a: []), r"JWT SVID response is empty",
         serves_token=False),
    Case("first-svid-is-another-identity",
         answer(lambda f, s, a: [SvidEntry(OTHER, f.token(OTHER, a), "other"),
                                 SvidEntry(DEMO, f.token(DEMO, a))]),
         r"not the requested spiffe://example\.org/demo"),
    Case("spiffe-id-field-disagrees-with-sub",
         answer(lambda f, s, a: [SvidEntry(DEMO, f.token(OTHER, a))]),
         r"not the requested spiffe://example\.org/demo"),
    Case("duplicate-hints-first-expired",
         answer(lambda f, s, a: [
             SvidEntry(DEMO, f.token(DEMO, a, iat=_now() - 900, exp=_now() - 600), "h"),
             SvidEntry(DEMO, f.token(DEMO, a), "h")]),
         r"Token has expired"),
    Case("answer-over-the-4MiB-grpc-limit",
         answer(lambda f, s, a: [SvidEntry(DEMO, "e" * (5 << 20))]),
         r"too large.*larger than max", reason="response_too_large"),
    # -- the JWT bundles ---------------------------------------------------------------------
    Case("bundle-empty-jwks", bundles(lambda f: {"example.org": _jwks({"keys": []})}),
         r"Authority not found for key ID"),
    Case("bundle-malformed-json", bundles(lambda f: {"example.org": b"{not json"}),
         r"bundles are unusable.*valid jwks", reason="invalid_bundle"),
    Case("bundle-key-without-kid",
         bundles(lambda f: {"example.org": _jwks({"keys": [
             {k: v for k, v in f.authority.spiffe_bundle()["keys"][0].items() if k != "kid"}
         ]})}),
         r"bundles are unusable.*keyID", reason="invalid_bundle"),
    Case("bundle-missing-for-our-trust-domain",
         bundles(lambda f: {"elsewhere.example": _jwks(f.authority.spiffe_bundle())}),
         r"no JWT bundle for trust domain example\.org"),
    Case("bundle-map-empty", bundles(lambda f: {}),
         r"no JWT bundle for trust domain example\.org"),
    Case("bundle-holds-other-keys-under-our-kid",
         bundles(lambda f: {"example.org": _jwks(f.authority.impostor().spiffe_bundle())}),
         r"Signature verification failed"),
]


def test_there_are_at_least_30_distinct_cases() -> None:
    """The brief asks for >= 30 distinct malformed answers, each its own test id."""
    ids = [c.id for c in CASES]
    assert len(set(ids)) == len(ids) >= 30


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_malformed_answer_is_a_classified_error_and_reaches_no_cloud(
        honest_agent: DevStack, two_cloud_config: Path, case: Case,
        capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> None:
    """The source raises a classified SourceError naming the problem; `once` fails cleanly,
    calls neither STS, and the served token appears in no output."""
    served = Served(honest_agent)
    case.install(served)

    source = WorkloadApiSource(honest_agent.workload_socket_uri, timeout=5, now=time.time)
    try:
        with pytest.raises(SourceError) as caught:
            source.fetch(AWS_AUDIENCE, DEMO)
    finally:
        source.close()
    error = caught.value
    assert (error.reason, error.retryable) == (case.reason, case.retryable), error.detail
    assert re.search(case.problem, error.detail), error.detail

    caplog.set_level(logging.DEBUG)
    code = main(["once", "--log-level", "DEBUG", "--config", str(two_cloud_config)])
    out = capsys.readouterr()
    assert code == 1
    lines = {line.split()[0]: line for line in out.out.splitlines()[1:3]}
    assert set(lines) == {"aws", "gcp"}, out.out
    for line in lines.values():
        assert " FAILED " in line
        assert "workload API" in line
        assert re.search(case.problem, line), line
    assert "Traceback" not in out.out + out.err
    assert honest_agent.aws.requests == ()
    assert honest_agent.gcp.requests == ()

    assert bool(served.tokens) is case.serves_token, "the fault was served"
    logged = "\n".join(r.getMessage() + str(getattr(r, "fields", "")) for r in caplog.records)
    everything = "\n".join([out.out, out.err, logged, str(error)])
    leaked = [p for p in served.fragments() if p in everything]
    assert leaked == []


def test_duplicate_hints_take_the_first_entry_per_spec(honest_agent: DevStack) -> None:
    """Not an error: with duplicate hints the client takes the first (PROTOCOLS §1); the
    second, expired entry is never looked at."""
    served = Served(honest_agent)
    now = _now()
    answer(lambda f, s, a: [
        SvidEntry(DEMO, f.token(DEMO, a), "h"),
        SvidEntry(DEMO, f.token(DEMO, a, iat=now - 900, exp=now - 600), "h"),
    ])(served)
    source = WorkloadApiSource(honest_agent.workload_socket_uri, timeout=5, now=time.time)
    try:
        svid = source.fetch(AWS_AUDIENCE, DEMO)
    finally:
        source.close()
    assert svid.token == served.tokens[0]
    assert svid.expires_at > time.time() + 250


def test_a_bundle_stream_that_recovers_unblocks_the_source(honest_agent: DevStack) -> None:
    """After a malformed bundle the source fails closed, and works again once the agent
    streams good bundles (the failure is retryable, not sticky)."""
    honest_agent.workload.faults.replace_bundles({"example.org": b"{not json"})
    source = WorkloadApiSource(honest_agent.workload_socket_uri, timeout=5, now=time.time)
    try:
        with pytest.raises(SourceError) as caught:
            source.fetch(AWS_AUDIENCE, DEMO)
        assert caught.value.reason == "invalid_bundle"
        honest_agent.workload.faults.replace_bundles(None)
        deadline = time.monotonic() + 10
        while True:
            try:
                svid = source.fetch(AWS_AUDIENCE, DEMO)
                break
            except SourceError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        assert svid.spiffe_id == DEMO
    finally:
        source.close()
