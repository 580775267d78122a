"""Logging cannot leak a credential: by-value masking, JWT shapes, and pinned SDK loggers."""

from __future__ import annotations

import base64
import io
import json
import logging
import secrets
import sys
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.logs import RedactingFilter, Redactor, pin_third_party_loggers, setup_logging

THIRD_PARTY = ("botocore", "urllib3", "google.auth", "grpc")


def _b64(doc: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(doc).encode()).rstrip(b"=").decode()


def _jwt() -> str:
    """A JWT-shaped string that nobody registered with the redactor."""
    header = _b64({"alg": "ES256", "kid": "k1", "typ": "JWT"})
    claims = _b64({"sub": "spiffe://example.org/w", "aud": ["sts.amazonaws.com"], "exp": 1})
    return f"{header}.{claims}.{secrets.token_urlsafe(64)}"


def _secret() -> str:
    return "SECRET-" + secrets.token_urlsafe(24)


@pytest.fixture
def installed() -> Iterator[list[logging.Handler]]:
    """Collects handlers added to the root logger and restores root and SDK levels after."""
    root = logging.getLogger()
    root_level = root.level
    names = (*THIRD_PARTY, "boto3", "google", "spiffe", "s3transfer", "werkzeug")
    levels = {n: logging.getLogger(n).level for n in names}
    handlers: list[logging.Handler] = []
    yield handlers
    for h in handlers:
        root.removeHandler(h)
        h.close()
    root.setLevel(root_level)
    for n, level in levels.items():
        logging.getLogger(n).setLevel(level)


@pytest.mark.parametrize(
    "template",
    ["{s}", "key={s}", "prefix {s} middle {s} suffix", "https://sts/?WebIdentityToken={s}&x=1",
     "{{\"SessionToken\": \"{s}\"}}"],
    ids=["alone", "key-value", "twice", "in-url", "in-json"],
)
def test_redactor_masks_registered_values_wherever_they_appear(template: str) -> None:
    """A registered secret is replaced everywhere it occurs; surrounding text survives."""
    secret = _secret()
    r = Redactor()
    r.add(secret)
    out = r.redact(template.format(s=secret))
    assert secret not in out
    assert "[REDACTED]" in out
    assert out.replace("[REDACTED]", "") == template.format(s="")


def test_redactor_masks_several_registered_values() -> None:
    """Every registered value is masked, not only the newest."""
    r = Redactor()
    values = [_secret() for _ in range(5)]
    r.add(*values[:3])
    r.add(*values[3:])
    out = r.redact(" | ".join(values))
    assert not any(v in out for v in values)


@pytest.mark.parametrize(
    "template",
    ["{t}", "Bearer {t}", "token={t}&aud=x", "{t}\n"],
    ids=["alone", "bearer", "form", "trailing-newline"],
)
def test_redactor_masks_any_jwt_shaped_string(template: str) -> None:
    """A JWT nobody registered is masked by shape."""
    token = _jwt()
    out = Redactor().redact(template.format(t=token))
    assert token not in out
    assert token.split(".")[1] not in out  # not even the claims segment
    assert "[REDACTED]" in out


def test_redactor_leaves_ordinary_text_alone() -> None:
    """Text without secrets or JWT shapes passes through unchanged."""
    text = "refreshed etl-s3: valid for 3600s (svid 12ms, sts 80ms)"
    assert Redactor().redact(text) == text


def test_filter_rewrites_message_and_args() -> None:
    """The filter renders the message once, redacted, and drops the raw arguments."""
    secret, token = _secret(), _jwt()
    r = Redactor()
    r.add(secret)
    record = logging.LogRecord("bridge.test", logging.INFO, __file__, 1,
                               "creds %s for %r via %s", (secret, {"k": secret}, token), None)
    assert RedactingFilter(r).filter(record) is True
    rendered = logging.Formatter("%(message)s").format(record)
    assert secret not in rendered
    assert token not in rendered
    assert not record.args
    assert rendered.startswith("creds [REDACTED] for ")


def test_filter_rewrites_exception_text() -> None:
    """An exception whose message carries a secret is formatted, then redacted."""
    secret = _secret()
    r = Redactor()
    r.add(secret)
    try:
        raise RuntimeError(f"STS refused token {secret}")
    except RuntimeError:
        record = logging.LogRecord("bridge.test", logging.ERROR, __file__, 1,
                                   "refresh failed", None, sys.exc_info())
    RedactingFilter(r).filter(record)
    rendered = logging.Formatter("%(message)s").format(record)
    assert secret not in rendered
    assert "RuntimeError: STS refused token [REDACTED]" in rendered
    assert "Traceback" in rendered


def test_filter_rewrites_stack_info() -> None:
    """Stack text attached with stack_info=True is redacted too."""
    secret = _secret()
    r = Redactor()
    r.add(secret)
    record = logging.LogRecord("bridge.test", logging.INFO, __file__, 1, "m", None, None,
                               sinfo=f"Stack (most recent call last):\n  f({secret!r})")
    RedactingFilter(r).filter(record)
    assert secret not in logging.Formatter("%(message)s").format(record)


def _log_everything(logger: logging.Logger, secret: str, token: str) -> None:
    logger.debug("debug %s", secret)
    logger.debug("token %s", token)
    logger.info("inline " + secret)  # a pre-rendered message, no args
    logger.warning("mapping %(v)s", {"v": secret})
    try:
        raise ValueError(f"exchange failed for {secret} with {token}")
    except ValueError:
        logger.exception("refresh of %s failed", "etl-s3")
    try:
        try:
            raise KeyError(secret)
        except KeyError as exc:
            raise RuntimeError("wrapped") from exc
    except RuntimeError:
        logger.debug("chained", exc_info=True, stack_info=True)


@pytest.mark.parametrize("fmt", ["text", "json"], ids=["text", "json"])
def test_setup_logging_never_writes_a_secret_even_at_debug(
        fmt: str, installed: list[logging.Handler]) -> None:
    """Through the installed handler no registered secret or JWT reaches the stream."""
    secret, token = _secret(), _jwt()
    redactor = Redactor()
    redactor.add(secret)
    stream = io.StringIO()
    installed.append(setup_logging(redactor, level="DEBUG", fmt=fmt, stream=stream))
    _log_everything(logging.getLogger("bridge.test.logs"), secret, token)
    out = stream.getvalue()
    assert "debug [REDACTED]" in out  # DEBUG really was emitted
    assert "refresh of etl-s3 failed" in out
    assert secret not in out
    assert token not in out
    if fmt == "json":
        assert all(json.loads(line) for line in out.splitlines() if line.startswith("{"))


def test_json_structured_fields_are_redacted(installed: list[logging.Handler]) -> None:
    """Structured `fields` in JSON logs go through the same nets as the message."""
    secret, token = _secret(), _jwt()
    redactor = Redactor()
    redactor.add(secret)
    stream = io.StringIO()
    installed.append(setup_logging(redactor, level="DEBUG", fmt="json", stream=stream))
    logging.getLogger("bridge.test.logs").warning(
        "refresh failed", extra={"fields": {"target": "etl-s3", "detail": f"{secret} {token}"}})
    out = stream.getvalue()
    assert "etl-s3" in out
    assert secret not in out
    assert token not in out


def test_sdk_loggers_stay_at_warning_after_setup_at_debug(
        installed: list[logging.Handler]) -> None:
    """botocore, urllib3, google.auth and grpc stay at WARNING though ours run at DEBUG."""
    stream = io.StringIO()
    installed.append(setup_logging(Redactor(), level="DEBUG", stream=stream))
    assert logging.getLogger().getEffectiveLevel() == logging.DEBUG
    for name in THIRD_PARTY:
        assert logging.getLogger(name).getEffectiveLevel() == logging.WARNING, name
        child = logging.getLogger(f"{name}.wire")
        child.debug("request body for %s", name)
        child.warning("warning from %s", name)
    out = stream.getvalue()
    for name in THIRD_PARTY:
        assert f"request body for {name}" not in out
        assert f"warning from {name}" in out


def test_pin_third_party_loggers_undoes_a_debug_setting(
        installed: list[logging.Handler]) -> None:
    """Pinning resets SDK loggers someone turned up to DEBUG back to WARNING."""
    for name in THIRD_PARTY:
        logging.getLogger(name).setLevel(logging.DEBUG)
    pin_third_party_loggers()
    for name in THIRD_PARTY:
        assert logging.getLogger(name).getEffectiveLevel() == logging.WARNING, name


def test_reserved_capacity_keeps_every_live_secret_masked() -> None:
    """A daemon with many targets reserves room so no live secret is evicted."""
    from bridge.logs import Redactor

    redactor = Redactor(capacity=4)
    redactor.reserve(1000)
    values = [f"secret-value-{i:06d}" for i in range(1000)]
    redactor.add(*values)
    assert all(redactor.redact(f"x {v} y") == "x [REDACTED] y" for v in values[:10])


_SECRET_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+/=_-. :\t"


@given(values=st.lists(st.text(alphabet=_SECRET_CHARS, min_size=8, max_size=40),
                       min_size=1, max_size=5),
       filler=st.lists(st.text(max_size=30), min_size=1, max_size=6))
def test_no_registered_secret_survives_in_any_line(values: list[str],
                                                   filler: list[str]) -> None:
    """Wherever a registered value sits (inside a longer word, after spaces, at either
    end) and whether or not it holds whitespace itself, it never comes out whole."""
    redactor = Redactor()
    redactor.add(*values)
    line = "".join(f"{f}{v}" for f, v in zip(filler, values * 6, strict=False))
    redacted = redactor.redact(line)
    for value in values:
        assert value not in redacted, (value, line, redacted)
