"""Settings of the audit service (env prefix ``AUDIT_``)."""

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.settings import KafkaSettings, MongoSettings, ServiceSettings


class AuditSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="AUDIT_", extra="ignore")

    http_port: int = Field(default=8005, ge=1, le=65535, description="port the HTTP API listens on")
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    mongo: MongoSettings = Field(default_factory=MongoSettings)
