"""The contact address for a request's final notice: written by intake, read by notifier, encrypted throughout.

The address is sealed under the subject's key for the ``contact`` dataset in keyvault; once the final notice
is accepted by the SMTP server, notifier has keyvault destroy that key, and the stored ciphertext is unreadable.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pymongo import AsyncMongoClient

CONTACT_DATASET = "contact"


@dataclass(frozen=True)
class Contact:
    request_id: str
    subject_id: str
    email_ciphertext: str
    mailed_at: datetime | None = None


class MongoContactStore:
    def __init__(self, client: AsyncMongoClient[dict[str, Any]], database: str) -> None:
        self._contacts = client[database]["contacts"]

    async def put(self, contact: Contact) -> None:
        await self._contacts.update_one(
            {"_id": contact.request_id},
            {"$setOnInsert": {"subject_id": contact.subject_id, "email_ciphertext": contact.email_ciphertext}},
            upsert=True,
        )

    async def get(self, request_id: str) -> Contact | None:
        doc = await self._contacts.find_one({"_id": request_id})
        if doc is None:
            return None
        return Contact(doc["_id"], doc["subject_id"], doc["email_ciphertext"], doc.get("mailed_at"))

    async def forget(self, request_id: str) -> None:
        await self._contacts.delete_one({"_id": request_id})

    async def mark_mailed(self, request_id: str, at: datetime) -> None:
        await self._contacts.update_one({"_id": request_id}, {"$set": {"mailed_at": at}})


def email_lookup_hash(address: str, key: str) -> str:
    """The keyed hash an account stores beside its encrypted address, so the address can be found, not read."""
    normalized = address.strip().lower().encode()
    return hmac.new(key.encode(), normalized, hashlib.sha256).hexdigest()
