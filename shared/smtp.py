"""SMTP through aiosmtplib, with its failures sorted into what a caller can act on, free of addresses.

aiosmtplib's exceptions carry the server's reply, and servers name the recipient in it ("550 <ada@…>: no such
user"). Every failure leaves here as a :class:`MailError` whose text is scrubbed and whose cause is dropped, so
nothing downstream (logs, dead-letter headers, events) can print the address by accident.
"""

from __future__ import annotations

from email.message import EmailMessage

import aiosmtplib

from shared.scrub import scrub
from shared.settings import SmtpSettings


class MailError(Exception):
    """A mail was not accepted; ``code`` is the server's reply code when it answered."""

    def __init__(self, reason: str, code: int | None = None) -> None:
        super().__init__(reason)
        self.code = code


class MailRefusedError(MailError):
    """Refused for good (a 5xx reply to the sender, a recipient or the content): sending it again will not help."""


class MailDeferredError(MailError):
    """Refused for now (a 4xx reply: greylisting, a full mailbox, a busy server): the same mail may pass later."""


class MailServerUnavailableError(MailError, ConnectionError):
    """The server could not be reached, timed out or hung up: a ``ConnectionError``, so callers wait it out."""


class MailSetupError(MailError):
    """Our side of the session was refused (HELO, AUTH, STARTTLS): a configuration problem, not this mail's."""


def _reply(exc: aiosmtplib.SMTPResponseException) -> str:
    return scrub(f"SMTP {exc.code} {exc.message}")[:300]


def _classify(exc: Exception) -> MailError:
    """The one place that reads aiosmtplib's exceptions; the order matters (some are several kinds at once)."""
    match exc:
        case aiosmtplib.SMTPRecipientsRefused(recipients=refused):
            codes = sorted(r.code for r in refused)
            text = scrub("; ".join(f"{r.code} {r.message}" for r in refused))[:300]
            # A temporary refusal of any recipient means the mail may still go through later.
            if codes and 400 <= codes[0] < 500:
                return MailDeferredError(f"recipient deferred: SMTP {text}", codes[0])
            return MailRefusedError(f"recipient refused: SMTP {text}", codes[-1] if codes else None)
        case aiosmtplib.SMTPConnectResponseError():
            return MailServerUnavailableError(f"the server refused the session: {_reply(exc)}", exc.code)
        case aiosmtplib.SMTPAuthenticationError() | aiosmtplib.SMTPHeloError():
            return MailSetupError(f"the server refused our session: {_reply(exc)}", exc.code)
        case aiosmtplib.SMTPResponseException() if exc.code >= 500:
            # SMTPSenderRefused and SMTPDataError included: a 5xx to MAIL FROM is also per message (552: too big).
            return MailRefusedError(f"refused: {_reply(exc)}", exc.code)
        case aiosmtplib.SMTPResponseException():
            return MailDeferredError(f"deferred: {_reply(exc)}", exc.code)
        case aiosmtplib.SMTPServerDisconnected() | aiosmtplib.SMTPConnectError() | aiosmtplib.SMTPTimeoutError():
            return MailServerUnavailableError(f"the server is unavailable: {type(exc).__name__}")
        case OSError() | TimeoutError():
            return MailServerUnavailableError(f"the server is unavailable: {type(exc).__name__}")
        case _:
            return MailSetupError(f"the session failed: {type(exc).__name__}: {scrub(str(exc))[:300]}")


async def send_mail(settings: SmtpSettings, message: EmailMessage) -> None:
    """Hand ``message`` to the SMTP server; raises a :class:`MailError` subclass when it is not accepted."""
    try:
        await aiosmtplib.send(
            message,
            hostname=settings.host,
            port=settings.port,
            username=settings.username,
            password=settings.password.get_secret_value() if settings.password else None,
            start_tls=settings.use_tls,
            timeout=15,
        )
    except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
        # "from None": a rendered traceback would otherwise print the original, unscrubbed, as the cause.
        raise _classify(exc) from None


async def smtp_ping(settings: SmtpSettings) -> bool:
    client = aiosmtplib.SMTP(hostname=settings.host, port=settings.port, timeout=5)
    await client.connect()
    try:
        code, _ = await client.noop()
        return code == 250
    finally:
        await client.quit()
