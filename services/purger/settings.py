"""Settings of the purger service (env prefix ``PURGER_``)."""

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.settings import KafkaSettings, MongoSettings, S3Settings, ServiceSettings


class PurgerSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="PURGER_", extra="ignore")

    http_port: int = Field(default=8002, ge=1, le=65535, description="port the HTTP API listens on")
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    mongo: MongoSettings = Field(default_factory=MongoSettings)
    s3: S3Settings = Field(default_factory=S3Settings)
