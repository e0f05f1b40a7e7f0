"""Settings of the purger service (env prefix ``PURGER_``)."""

from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import SettingsConfigDict

from shared.settings import KafkaSettings, MilvusSettings, MongoSettings, PostgresSettings, S3Settings, ServiceSettings


class PurgerSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="PURGER_", extra="ignore")

    http_port: int = Field(default=8002, ge=1, le=65535, description="port the HTTP API listens on")
    datamap_path: Path = Field(default=Path("deploy/datamap.yaml"), description="the data map (datasets)")
    purge_after_hours: float = Field(
        default=24.0, ge=0, le=24 * 30, description="how long tagged records wait before the nightly job deletes them"
    )
    nightly_at: str = Field(default="02:30", description="when the nightly purge runs each day (HH:MM, UTC)")
    purge_batch_size: int = Field(default=500, ge=1, le=10_000, description="records deleted per batch")
    purge_batch_pause_s: float = Field(default=0.05, ge=0, le=60, description="pause between batches")
    backups_bucket: str = Field(default="lethe-backups", description="bucket that `lethe backup` writes to")
    backup_retention_days: int = Field(default=90, ge=1, le=3650, description="days a backup is kept")
    backup_expiry_interval_s: float = Field(default=3600.0, gt=0, description="how often expired backups are deleted")
    retention_check_interval_s: float = Field(
        default=300.0, gt=0, description="how often ended rules and holds are acted on (what they kept is erased)"
    )
    intake_url: str = Field(default="http://127.0.0.1:8001", description="intake, for the rules and holds in force")
    intake_token: SecretStr | None = Field(default=None, description="service token with scope retention:read")
    s3_delete_attempts: int = Field(default=5, ge=1, le=20, description="tries per key that DeleteObjects refuses")
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    mongo: MongoSettings = Field(default_factory=MongoSettings)
    postgres: PostgresSettings = Field(default_factory=PostgresSettings)
    s3: S3Settings = Field(default_factory=S3Settings)
    milvus: MilvusSettings = Field(default_factory=MilvusSettings)

    @field_validator("nightly_at")
    @classmethod
    def _time_of_day(cls, value: str) -> str:
        hours, _, minutes = value.partition(":")
        if not (hours.isdigit() and minutes.isdigit() and int(hours) < 24 and int(minutes) < 60):
            raise ValueError("nightly_at must be HH:MM (UTC), e.g. 02:30")
        return value
