"""The contact address for a request's final notice: captured and stored by intake, read by notifier through
intake's API (shared.intake_client), encrypted throughout.

The address is sealed under the subject's key for the ``contact`` dataset in keyvault; once the final notice
is accepted by the SMTP server, notifier has keyvault destroy that key, and the stored ciphertext is unreadable.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

CONTACT_DATASET = "contact"


@dataclass(frozen=True)
class Contact:
    request_id: str
    subject_id: str
    email_ciphertext: str


def email_lookup_hash(address: str, key: str) -> str:
    """The keyed hash an account stores beside its encrypted address, so the address can be found, not read."""
    normalized = address.strip().lower().encode()
    return hmac.new(key.encode(), normalized, hashlib.sha256).hexdigest()
