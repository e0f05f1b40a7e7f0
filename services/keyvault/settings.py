"""Settings of the keyvault service (env prefix ``KEYVAULT_``)."""

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from shared.settings import AuthSettings, KafkaSettings, MongoSettings, ServiceSettings


class KeyvaultSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="KEYVAULT_", extra="ignore")

    http_port: int = Field(default=8003, ge=1, le=65535, description="port the HTTP API listens on")
    datamap_path: Path = Field(
        default=Path("deploy/datamap.yaml"), description="the data map: a key of a dataset not in it is never destroyed"
    )
    kek_provider: Literal["local", "kms"] = Field(default="local", description="where the KEK lives: local or kms")
    local_keyring: SecretStr | None = Field(
        default=None, description='local KEK keyring as JSON: {"current": id, "keys": {id: base64 32 bytes}}'
    )
    local_keyring_file: Path = Field(
        default=Path("var/keyvault/keyring.json"), description="keyring file, created on first local start"
    )
    kms_key_id: str | None = Field(default=None, description="KMS key id or ARN that wraps data keys")
    kms_endpoint_url: str | None = Field(default=None, description="KMS endpoint (a KMS-compatible server)")
    kms_region: str = Field(default="us-east-1", description="KMS region")
    kms_access_key_id: SecretStr | None = Field(default=None, description="KMS credentials (else the AWS chain)")
    kms_secret_access_key: SecretStr | None = Field(default=None, description="KMS credentials (else the AWS chain)")
    grace_days: int = Field(default=0, ge=0, le=30, description="days a destroyed key stays restorable (0: none)")
    shred_interval_s: float = Field(default=60.0, gt=0, description="how often ended grace windows are shredded")
    client_cache_ttl_s: int = Field(
        default=300, ge=0, le=300, description="how long clients may cache a data key (at most 5 minutes)"
    )
    intake_url: str = Field(default="http://127.0.0.1:8001", description="intake, for the rules and holds in force")
    intake_token: SecretStr | None = Field(default=None, description="service token with scope retention:read")
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    mongo: MongoSettings = Field(default_factory=MongoSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
