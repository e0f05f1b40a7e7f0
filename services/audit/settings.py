"""Settings of the audit service (env prefix ``AUDIT_``)."""

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from shared.settings import AuthSettings, KafkaSettings, MongoSettings, ServiceSettings


class AuditSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="AUDIT_", extra="ignore")

    http_port: int = Field(default=8005, ge=1, le=65535, description="port the HTTP API listens on")
    # The signing key is configured apart from the store's credentials, and the consumer's write path never uses it.
    signing_key: SecretStr | None = Field(default=None, description="Ed25519 private key, base64 of 32 bytes")
    signing_key_file: Path = Field(
        default=Path("var/audit/signing.key"), description="signing key file, created on first local start"
    )
    checkpoint_every_entries: int = Field(default=100, ge=1, description="sign the chain head every N entries")
    checkpoint_every_s: float = Field(default=300.0, gt=0, description="or every M seconds, if anything was added")
    datamap_path: Path = Field(default=Path("deploy/datamap.yaml"), description="the data map receipts cover")
    page_size_cap: int = Field(default=500, ge=1, le=5000, description="most log entries one page returns")
    # The operator console (/console) shows what the other services know, through their APIs, with the
    # signed-in operator's own token.
    intake_url: str = Field(default="http://127.0.0.1:8001", description="intake, for requests, rules and holds")
    purger_url: str = Field(default="http://127.0.0.1:8002", description="purger, for its readiness")
    keyvault_url: str = Field(default="http://127.0.0.1:8003", description="keyvault, for its readiness")
    notifier_url: str = Field(default="http://127.0.0.1:8004", description="notifier, for webhook deliveries")
    console_session_hours: float = Field(default=8.0, gt=0, le=24, description="how long a console sign-in lasts")
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    mongo: MongoSettings = Field(default_factory=MongoSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
