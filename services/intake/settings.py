"""Settings of the intake service (env prefix ``INTAKE_``)."""

from pathlib import Path
from typing import Annotated

from pydantic import Field, SecretStr, StringConstraints
from pydantic_settings import SettingsConfigDict

from shared.settings import AuthSettings, KafkaSettings, MongoSettings, ServiceSettings, SmtpSettings


class IntakeSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="INTAKE_", extra="ignore")

    http_port: int = Field(default=8001, ge=1, le=65535, description="port the HTTP API listens on")
    public_url: str = Field(
        default="http://127.0.0.1:8001", description="base URL clients reach intake at (status and verify links)"
    )
    datamap_path: Path = Field(default=Path("deploy/datamap.yaml"), description="the data map (datasets)")
    default_rules_path: Path | None = Field(
        default=Path("deploy/retention-rules.yaml"),
        description="retention rules loaded as version 1 when none exist yet (unset: start with none)",
    )
    jurisdictions_path: Path = Field(
        default=Path("deploy/jurisdictions.yaml"), description="the laws requests are answered under, and the default"
    )
    deadline_days: int | None = Field(
        default=None, ge=1, le=90, description="days every request must be done in, instead of its law's (drills)"
    )
    cooling_off_s: float = Field(
        default=0.0,
        ge=0,
        le=30 * 24 * 3600,
        description=(
            "seconds a new request waits before the purger gets it: until then an operator may deny it and the person "
            "may cancel it (the acknowledgement mail carries a cancel link); 0: erasure starts at once"
        ),
    )
    backups_days: int = Field(default=90, ge=1, le=3650, description="days until backups holding the data expire")
    deadline_warn_fraction: float = Field(
        default=0.8, gt=0, lt=1, description="share of the deadline after which deletion.overdue warns"
    )
    deadline_watch_interval_s: float = Field(default=300.0, gt=0, description="how often the deadline watch runs")
    acknowledgement_interval_s: float = Field(
        default=60.0, gt=0, description="how often unacknowledged requests are looked for (also woken by each new one)"
    )
    outbox_interval_s: float = Field(default=1.0, gt=0, description="how often the outbox relay looks for events")
    rate_limit: str = Field(default="120/minute", description="per-client request limit (limits notation)")
    email_rate_limit_per_address: str = Field(default="3/hour", description="email-channel limit per address")
    email_rate_limit_per_client: str = Field(default="20/hour", description="email-channel limit per client")
    max_body_bytes: int = Field(default=16 * 1024, ge=1024, le=1024 * 1024, description="request body size cap")
    max_page_size: int = Field(default=100, ge=1, le=1000, description="largest page a list endpoint returns")
    idempotency_ttl_s: int = Field(default=24 * 3600, ge=60, description="how long an Idempotency-Key is remembered")
    accounts_dataset: str = Field(default="accounts", description="data-map dataset the email channel looks up")
    email_lookup_field: str = Field(
        default="email_hash", description="field of that dataset holding the keyed hash of the address"
    )
    email_address_field: str = Field(
        default="email",
        description="field of that dataset holding the address the final notice goes to (API-channel requests)",
    )
    email_lookup_key: SecretStr = Field(
        default=SecretStr("lethe-local-email-lookup-key"),
        description="HMAC key of the email lookup hash (shared with whatever writes the accounts)",
    )
    verification_secret: SecretStr | None = Field(
        default=None, description="HS256 secret of email verification links (default: LETHE_AUTH_JWT_SECRET)"
    )
    verification_ttl_s: int = Field(default=24 * 3600, ge=60, le=7 * 24 * 3600, description="verification link life")
    intent_producers: tuple[Annotated[str, StringConstraints(min_length=1, max_length=200)], ...] = Field(
        default=(),
        description=(
            "upstream services (the intent's producer) allowed to ask for deletions on deletion.intents, "
            'a JSON list such as ["accounts", "billing"]; empty (the default): none, every intent is rejected'
        ),
    )
    keyvault_url: str = Field(default="http://127.0.0.1:8003", description="keyvault, to seal contact addresses")
    keyvault_token: SecretStr | None = Field(
        default=None, description="service token with scope keys:use (without it, no email-channel requests)"
    )
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    mongo: MongoSettings = Field(default_factory=MongoSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    smtp: SmtpSettings = Field(default_factory=SmtpSettings)

    def link_secret(self) -> str | None:
        """What the links mailed to the person are signed with (verification, cancel), if anything."""
        secret = self.verification_secret or self.auth.jwt_secret
        return None if secret is None else secret.get_secret_value()
