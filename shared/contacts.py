"""The contact address for a request's final notice: captured and stored by intake, read by notifier through
intake's API (shared.intake_client), encrypted throughout.

The address is sealed under the subject's key for the ``contact`` dataset in keyvault; once the final notice
is accepted by the SMTP server, notifier has keyvault destroy that key, and the stored ciphertext is unreadable.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Protocol

CONTACT_DATASET = "contact"


@dataclass(frozen=True)
class Contact:
    request_id: str
    subject_id: str
    email_ciphertext: str  # the person's address (or, when lethe knows none, their authorised agent's)
    # Who else gets every notice, sealed the same way: the authorised agent who asked on the person's behalf.
    copies: tuple[str, ...] = ()


class Opener(Protocol):
    async def decrypt(self, subject_id: str, dataset: str, ciphertext: str) -> bytes: ...


async def open_addresses(keyvault: Opener, contact: Contact) -> tuple[str, list[str]]:
    """The contact's addresses in the clear: (to, copies). Raises what keyvault raises for a shredded key."""
    to = (await keyvault.decrypt(contact.subject_id, CONTACT_DATASET, contact.email_ciphertext)).decode()
    copies = [(await keyvault.decrypt(contact.subject_id, CONTACT_DATASET, c)).decode() for c in contact.copies]
    return to, [c for c in copies if c != to]


def copy_to(message: EmailMessage, copies: list[str]) -> EmailMessage:
    """Send ``message`` to the agent too (Cc: the person sees who else was told)."""
    if copies:
        message["Cc"] = ", ".join(copies)
    return message


def email_lookup_hash(address: str, key: str) -> str:
    """The keyed hash an account stores beside its encrypted address, so the address can be found, not read."""
    normalized = address.strip().lower().encode()
    return hmac.new(key.encode(), normalized, hashlib.sha256).hexdigest()
