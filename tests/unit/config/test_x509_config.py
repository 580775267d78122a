"""`source: x509` and the Roles Anywhere keys: what loads, and each mistake at its key."""

from __future__ import annotations

import pytest
import yaml

from bridge.clouds.aws.config import RolesAnywhereHopConfig
from bridge.config import parse_config
from bridge.errors import ConfigError

_RA = "arn:aws:rolesanywhere:us-east-1:111122223333"
ANCHOR = f"{_RA}:trust-anchor/4b1e0c3e-0000-4000-8000-000000000001"
PROFILE = f"{_RA}:profile/4b1e0c3e-0000-4000-8000-000000000002"
ROLE = "arn:aws:iam::111122223333:role/x509"


def _doc(target: dict[str, object]) -> str:
    return yaml.safe_dump({"workload_api": {"socket": "unix:///run/agent.sock"},
                           "outputs": {"directory": "/dev/shm/creds"},
                           "targets": [{"name": "t", **target}]})


def _ra(**extra: object) -> dict[str, object]:
    return {"trust_anchor_arn": ANCHOR, "profile_arn": PROFILE, "role_arn": ROLE,
            "region": "us-east-1", **extra}


def _problems(target: dict[str, object]) -> dict[str, str]:
    with pytest.raises(ConfigError) as info:
        parse_config(_doc(target), env={})
    return {p.path: p.message for p in info.value.problems}


def test_roles_anywhere_target_loads() -> None:
    config = parse_config(_doc({"source": "x509", "aws": _ra(
        duration="12h", endpoint="http://127.0.0.1:8080",
        chain=[{"role_arn": "arn:aws:iam::444455556666:role/tenant"}])}), env={})
    (target,) = config.targets
    assert target.source == "x509"
    first, second = target.hops
    assert isinstance(first, RolesAnywhereHopConfig)
    assert (first.trust_anchor_arn, first.profile_arn, first.duration) == (ANCHOR, PROFILE,
                                                                           43200.0)
    assert first.url == "http://127.0.0.1:8080/sessions"
    assert not isinstance(second, RolesAnywhereHopConfig)


def test_the_default_source_is_jwt() -> None:
    config = parse_config(_doc({"aws": {"role_arn": ROLE, "region": "us-east-1"}}), env={})
    assert config.targets[0].source == "jwt"


def test_default_endpoint_is_the_region() -> None:
    config = parse_config(_doc({"source": "x509", "aws": _ra(region="eu-west-1")}), env={})
    hop = config.targets[0].hops[0]
    assert isinstance(hop, RolesAnywhereHopConfig)
    assert hop.url == "https://rolesanywhere.eu-west-1.amazonaws.com/sessions"


@pytest.mark.parametrize(("target", "path", "words"), [
    ({"source": "x509v2", "aws": _ra()}, "targets[0].source", "is not a source"),
    ({"aws": _ra()}, "targets[0].aws", "set the target's `source: x509`"),
    ({"source": "x509", "aws": {"role_arn": ROLE, "region": "us-east-1"}}, "targets[0].aws",
     "AssumeRoleWithWebIdentity takes a JWT-SVID"),
    ({"source": "x509", "aws": _ra(duration="13h")}, "targets[0].aws.duration", ""),
    ({"source": "x509", "aws": _ra(duration="5m")}, "targets[0].aws.duration", ""),
    ({"source": "x509", "aws": _ra(trust_anchor_arn=ROLE)}, "targets[0].aws.trust_anchor_arn",
     "not a Roles Anywhere trust anchor ARN"),
    ({"source": "x509", "aws": _ra(profile_arn=ANCHOR)}, "targets[0].aws.profile_arn",
     "not a Roles Anywhere profile ARN"),
    ({"source": "x509", "aws": _ra(endpoint="http://example.com")}, "targets[0].aws.endpoint",
     "plain http is allowed only on loopback"),
    ({"source": "x509", "aws": {k: v for k, v in _ra().items() if k != "profile_arn"}},
     "targets[0].aws.profile_arn", ""),
    ({"source": "x509", "jwt_file": True, "aws": _ra()}, "targets[0].jwt_file", "x509"),
    ({"x509_files": True, "aws": {"role_arn": ROLE, "region": "us-east-1"}},
     "targets[0].x509_files", "source: x509"),
    ({"source": "x509", "aws": _ra(chain=[{"role_arn": ROLE, "duration": "2h"}])},
     "targets[0].aws.chain[0].duration", "1h"),
])
def test_mistakes_are_named_at_their_key(target: dict[str, object], path: str,
                                         words: str) -> None:
    problems = _problems(target)
    assert path in problems, problems
    assert words in problems[path]


def test_gcp_x509_exchanges_on_googles_mtls_endpoint_by_default() -> None:
    """With `source: x509` the GCP hop's default STS is sts.mtls.googleapis.com."""
    from bridge.clouds import GCP, HopContext, Link
    from bridge.clouds.gcp.config import MTLS_STS

    config = parse_config(_doc({"source": "x509", "gcp": {
        "workload_identity_provider": "//iam.googleapis.com/projects/1/locations/global/"
                                      "workloadIdentityPools/spire/providers/x509"}}), env={})
    (hop,) = config.targets[0].hops
    (runtime,) = GCP.session(HopContext(timeout=1.0)).build(hop, link=Link.X509, earlier=[])
    assert runtime.scope == f"gcp_sts {MTLS_STS}"
    (jwt_runtime,) = GCP.session(HopContext(timeout=1.0)).build(hop, link=Link.SVID,
                                                                earlier=[])
    assert jwt_runtime.scope == "gcp_sts https://sts.googleapis.com/v1/token"
