"""The process entry shared by every service's ``__main__``: a CLI with --help, logging, asyncio.run."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar

import click
from pydantic import ValidationError
from pydantic_settings import BaseSettings

from shared.logging import configure_logging
from shared.service import Service
from shared.settings import LogSettings

S = TypeVar("S", bound=BaseSettings)


async def _serve(create_app: Callable[[S], Service], settings: S) -> None:
    # Built inside the running loop: the Kafka clients bind to the loop they are created in.
    await create_app(settings).run_until_signalled()


def _is_nested_settings(factory: object) -> bool:
    # Nested server settings (kafka, mongo, ...) read their own LETHE_* variables, listed in the epilog.
    return isinstance(factory, type) and issubclass(factory, BaseSettings)


def service_command(
    *, name: str, summary: str, settings_cls: type[S], create_app: Callable[[S], Service]
) -> click.Command:
    """Build the ``python -m services.<name>`` command; its --help lists every setting and its env variable."""
    prefix = settings_cls.model_config.get("env_prefix", "")
    lines = [
        f"  {prefix}{field.upper():<28} {info.description or ''} "
        f"(default: {info.get_default(call_default_factory=False)!r})"
        for field, info in settings_cls.model_fields.items()
        if not _is_nested_settings(info.default_factory)
    ]
    epilog = (
        "Settings come from the environment:\n\n\b\n"
        + "\n".join(lines)
        + "\n\nShared servers use LETHE_KAFKA_*, LETHE_MONGO_*, LETHE_S3_*, LETHE_SMTP_*, LETHE_MILVUS_*, "
        "LETHE_LOG_LEVEL and LETHE_LOG_FORMAT (json|console). See docs/operations.md."
    )

    @click.command(name=name, help=summary, epilog=epilog)
    def command() -> None:
        try:
            settings = settings_cls()
            log_settings = LogSettings()
        except ValidationError as exc:
            raise click.UsageError(f"invalid settings:\n{exc}") from exc
        configure_logging(log_settings, service=name)
        asyncio.run(_serve(create_app, settings))

    return command
