"""Settings of the intake service (env prefix ``INTAKE_``)."""

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.settings import KafkaSettings, MongoSettings, ServiceSettings


class IntakeSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="INTAKE_", extra="ignore")

    http_port: int = Field(default=8001, ge=1, le=65535, description="port the HTTP API listens on")
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    mongo: MongoSettings = Field(default_factory=MongoSettings)
