"""Settings of the notifier service (env prefix ``NOTIFIER_``)."""

from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import SettingsConfigDict

from shared.settings import AuthSettings, KafkaSettings, MongoSettings, ServiceSettings, SmtpSettings

# Svix's schedule (0 s, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h), stretched with 10 h steps to about 3 days.
DEFAULT_SCHEDULE = (0, 5, 300, 1800, 7200, 18000, 36000, 36000, 36000, 36000, 36000, 36000)


class NotifierSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="NOTIFIER_", extra="ignore")

    http_port: int = Field(default=8004, ge=1, le=65535, description="port the HTTP API listens on")
    retry_schedule_s: tuple[float, ...] = Field(
        default=DEFAULT_SCHEDULE, description="delay before each delivery attempt, in seconds (JSON list)"
    )
    delivery_timeout_s: float = Field(default=10.0, gt=0, le=15, description="timeout of one delivery attempt")
    worker_interval_s: float = Field(default=0.5, gt=0, description="how often due deliveries are looked for")
    allow_loopback_webhooks: bool = Field(
        default=False, description="accept loopback webhook URLs (the local profile of `make run` only)"
    )
    mail_daily_cap: int = Field(
        default=10_000, ge=0, description="at most this many mails to people per day; more wait for the next day"
    )
    mail_deferred_interval_s: float = Field(
        default=60.0, gt=0, description="how often mails deferred (by the daily cap or a 4xx reply) are tried again"
    )
    mail_give_up_after_h: float = Field(
        default=96.0, gt=0, description="a mail the server keeps refusing for now (4xx) fails after this many hours"
    )
    keyvault_url: str = Field(default="http://127.0.0.1:8003", description="keyvault, to open contact addresses")
    keyvault_token: SecretStr | None = Field(default=None, description="service token with scope keys:use")
    intake_url: str = Field(default="http://127.0.0.1:8001", description="intake, for a request's sealed address")
    intake_public_url: str | None = Field(
        default=None, description="intake as processors reach it, for their confirmations (intake_url if unset)"
    )
    datamap_path: Path = Field(default=Path("deploy/datamap.yaml"), description="the data map (its processors)")
    intake_token: SecretStr | None = Field(default=None, description="service token with scope contacts:read")
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    mongo: MongoSettings = Field(default_factory=MongoSettings)
    smtp: SmtpSettings = Field(default_factory=SmtpSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)

    @field_validator("retry_schedule_s")
    @classmethod
    def _schedule_is_sane(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if not value or any(step < 0 for step in value):
            raise ValueError("the retry schedule needs at least one attempt and no negative delays")
        return value
