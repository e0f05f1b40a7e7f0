"""Settings for the servers every service talks to: Kafka, MongoDB, S3, SMTP and Milvus (one env prefix each).

This module and the services' own ``settings.py`` are the only places that read the environment.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class KafkaSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LETHE_KAFKA_", extra="ignore")

    bootstrap_servers: str = "127.0.0.1:9092"
    # Every client authenticates (SASL/SCRAM) as a principal of its own; ACLs give each only the topics it needs.
    security_protocol: Literal["SASL_PLAINTEXT", "SASL_SSL", "PLAINTEXT"] = "SASL_PLAINTEXT"
    sasl_mechanism: Literal["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"] = "SCRAM-SHA-512"
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    # Consumer groups are "<group_prefix>-<service>"; a new group starts at the earliest offset unless told otherwise.
    group_prefix: str = "lethe"
    start_from: Literal["earliest", "latest"] = "earliest"
    # How long a transient failure is retried (with exponential backoff) before the service gives up.
    retry_attempts: int = Field(default=8, ge=1)
    retry_initial_delay_s: float = Field(default=0.2, gt=0)
    retry_max_delay_s: float = Field(default=30.0, gt=0)
    # How many of its assigned partitions a process handles at once (each partition stays in order).
    partitions_at_once: int = Field(default=3, ge=1)

    def group_of(self, service: str) -> str:
        """The consumer group of ``service``'s instances."""
        return f"{self.group_prefix}-{service}"

    def client_options(self) -> dict[str, Any]:
        """What every aiokafka client (producer, consumer, admin) is given to reach and authenticate to the broker."""
        options: dict[str, Any] = {"bootstrap_servers": self.bootstrap_servers}
        if self.security_protocol == "PLAINTEXT":
            return options
        if not self.sasl_username or self.sasl_password is None:
            raise ValueError(
                "Kafka needs a principal: set LETHE_KAFKA_SASL_USERNAME and LETHE_KAFKA_SASL_PASSWORD "
                "(or LETHE_KAFKA_SECURITY_PROTOCOL=PLAINTEXT for a broker without authentication)"
            )
        return options | {
            "security_protocol": self.security_protocol,
            "sasl_mechanism": self.sasl_mechanism,
            "sasl_plain_username": self.sasl_username,
            "sasl_plain_password": self.sasl_password.get_secret_value(),
        }


class MongoSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LETHE_MONGO_", extra="ignore")

    url: SecretStr = SecretStr("mongodb://127.0.0.1:27017/")
    database: str = "lethe"


class PostgresSettings(BaseSettings):
    """The PostgreSQL server of the data map's ``postgres`` datasets (the company's, reached by the purger and by
    ``lethe seed`` / ``verify-erasure``); unused when the data map has none."""

    model_config = SettingsConfigDict(env_prefix="LETHE_POSTGRES_", extra="ignore")

    url: SecretStr = SecretStr("postgresql://lethe:lethe-local-postgres@127.0.0.1:5432/lethe")
    pool_size: int = Field(default=8, ge=1, le=100, description="connections the purger keeps at most")


class S3Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LETHE_S3_", extra="ignore")

    endpoint_url: str | None = "http://127.0.0.1:8333"
    region: str = "us-east-1"
    access_key_id: SecretStr = SecretStr("lethe")
    secret_access_key: SecretStr = SecretStr("lethe-local-secret")


class SmtpSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LETHE_SMTP_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = 1025
    username: str | None = None
    password: SecretStr | None = None
    use_tls: bool = False
    sender: str = "lethe <privacy@lethe.local>"


class MilvusSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LETHE_MILVUS_", extra="ignore")

    # A file path means Milvus Lite, embedded; a http(s) URI means a Milvus server or Zilliz Cloud.
    uri: str = "var/milvus/lethe.db"
    token: SecretStr | None = None


class LogSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LETHE_LOG_", extra="ignore")

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # JSON lines for production; readable console lines for development.
    format: Literal["json", "console"] = "json"


class ServiceSettings(BaseSettings):
    """What every service has: where it serves HTTP. Each service subclasses this with its own env prefix."""

    model_config = SettingsConfigDict(extra="ignore")

    http_host: str = Field(default="127.0.0.1", description="address the HTTP API listens on")
    http_port: int = Field(default=8000, ge=1, le=65535, description="port the HTTP API listens on")


class AuthSettings(BaseSettings):
    """Bearer JWTs: an HS256 secret locally, a JWKS URL in production."""

    model_config = SettingsConfigDict(env_prefix="LETHE_AUTH_", extra="ignore")

    jwt_secret: SecretStr | None = Field(default=None, description="HS256 secret (local use)")
    jwks_url: str | None = Field(default=None, description="JWKS URL of the token issuer (production)")
    issuer: str = "lethe"
    audience: str = "lethe"
    leeway_s: int = Field(default=30, ge=0, le=300)


class CliSettings(BaseSettings):
    """What the ``lethe`` operator commands need to reach the services."""

    model_config = SettingsConfigDict(env_prefix="LETHE_", extra="ignore")

    intake_url: str = "http://127.0.0.1:8001"
    audit_url: str = "http://127.0.0.1:8005"
    keyvault_url: str = "http://127.0.0.1:8003"
    # An admin token; without one, the commands sign a short-lived one with LETHE_AUTH_JWT_SECRET (local use).
    admin_token: SecretStr | None = None
    datamap_path: str = "deploy/datamap.yaml"
