"""A mail sent with our SMTP adapter arrives in the local catcher as a file; refusals come back sorted."""

import asyncio
import email
import traceback
import uuid
from email.message import EmailMessage

import pytest

from shared.settings import SmtpSettings
from shared.smtp import MailDeferredError, MailRefusedError, MailServerUnavailableError, send_mail, smtp_ping
from tests.support import free_port

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


async def test_a_recipient_refused_for_good_comes_back_as_a_refusal_with_its_code_and_without_the_address(
    smtp_catcher,
):
    host, port, _ = smtp_catcher
    address = f"nobody-{uuid.uuid4().hex[:8]}@refused.test"
    with pytest.raises(MailRefusedError) as caught:
        await send_mail(SmtpSettings(host=host, port=port), mail_to(address))
    assert caught.value.code == 550
    assert address not in "".join(traceback.format_exception(caught.value))


async def test_a_recipient_refused_for_now_comes_back_as_deferred_with_its_code(smtp_catcher):
    host, port, _ = smtp_catcher
    address = f"later-{uuid.uuid4().hex[:8]}@deferred.test"
    with pytest.raises(MailDeferredError) as caught:
        await send_mail(SmtpSettings(host=host, port=port), mail_to(address))
    assert caught.value.code == 451
    assert address not in str(caught.value)


async def test_a_server_that_is_not_there_is_a_connection_error_to_wait_out():
    with pytest.raises(MailServerUnavailableError) as caught:
        await send_mail(SmtpSettings(host="127.0.0.1", port=free_port()), mail_to("ada@example.test"))
    assert isinstance(caught.value, ConnectionError)
    assert caught.value.__suppress_context__  # aiosmtplib's own error, with its text, is not printed as the cause


def mail_to(address: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = SmtpSettings().sender
    message["To"] = address
    message["Subject"] = "Your data was erased"
    message.set_content("Plain text part")
    return message
