"""AWS material: temporary credentials from STS."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class AwsCredentials:
    """Temporary AWS credentials from STS."""

    access_key_id: str = field(repr=False)
    secret_access_key: str = field(repr=False)
    session_token: str = field(repr=False)
    expires_at: float
    assumed_role_arn: str = ""
    region: str = ""  # where STS issued it: a GCP hop after it signs for this region

    def secrets(self) -> tuple[str, ...]:
        return (self.access_key_id, self.secret_access_key, self.session_token)
