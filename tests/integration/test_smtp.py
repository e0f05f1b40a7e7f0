"""A mail sent with our SMTP adapter arrives in the local catcher as a file."""

import asyncio
import email
import uuid
from email.message import EmailMessage

import pytest

from shared.settings import SmtpSettings
from shared.smtp import send_mail, smtp_ping

pytestmark = [pytest.mark.asyncio, pytest.mark.integration]


async def test_a_mail_goes_through_the_smtp_catcher_intact(smtp_catcher):
    host, port, directory = smtp_catcher
    settings = SmtpSettings(host=host, port=port)
    assert await smtp_ping(settings)
    marker = uuid.uuid4().hex
    message = EmailMessage()
    message["From"] = settings.sender
    message["To"] = "subject@example.test"
    message["Subject"] = f"Your data was erased ({marker})"
    message.set_content("Plain text part")
    message.add_alternative("<p>HTML part</p>", subtype="html")

    await send_mail(settings, message)

    async with asyncio.timeout(10):
        while True:
            found = [p for p in directory.glob("*.eml") if marker in p.read_text(errors="replace")]
            if found:
                break
            await asyncio.sleep(0.05)
    [path] = found
    received = email.message_from_bytes(path.read_bytes())
    assert received["To"] == "subject@example.test"
    assert received.is_multipart()
    assert {part.get_content_type() for part in received.walk()} >= {"text/plain", "text/html"}
