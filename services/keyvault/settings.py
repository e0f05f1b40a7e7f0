"""Settings of the keyvault service (env prefix ``KEYVAULT_``)."""

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.settings import KafkaSettings, MongoSettings, ServiceSettings


class KeyvaultSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="KEYVAULT_", extra="ignore")

    http_port: int = Field(default=8003, ge=1, le=65535, description="port the HTTP API listens on")
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    mongo: MongoSettings = Field(default_factory=MongoSettings)
