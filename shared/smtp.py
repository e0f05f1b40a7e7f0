"""SMTP through aiosmtplib."""

from __future__ import annotations

from email.message import EmailMessage

import aiosmtplib

from shared.settings import SmtpSettings


async def send_mail(settings: SmtpSettings, message: EmailMessage) -> None:
    await aiosmtplib.send(
        message,
        hostname=settings.host,
        port=settings.port,
        username=settings.username,
        password=settings.password.get_secret_value() if settings.password else None,
        start_tls=settings.use_tls,
        timeout=15,
    )


async def smtp_ping(settings: SmtpSettings) -> bool:
    client = aiosmtplib.SMTP(hostname=settings.host, port=settings.port, timeout=5)
    await client.connect()
    try:
        code, _ = await client.noop()
        return code == 250
    finally:
        await client.quit()
