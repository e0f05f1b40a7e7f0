"""Settings of the notifier service (env prefix ``NOTIFIER_``)."""

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.settings import KafkaSettings, MongoSettings, ServiceSettings, SmtpSettings


class NotifierSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="NOTIFIER_", extra="ignore")

    http_port: int = Field(default=8004, ge=1, le=65535, description="port the HTTP API listens on")
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    mongo: MongoSettings = Field(default_factory=MongoSettings)
    smtp: SmtpSettings = Field(default_factory=SmtpSettings)
