"""Where intake keeps each request's sealed contact address (``contacts``), for notifier to read through
``GET /internal/contacts/{request_id}``."""

from __future__ import annotations

from typing import Any

from pymongo import AsyncMongoClient

from shared.contacts import Contact


class MongoContactStore:
    def __init__(self, client: AsyncMongoClient[dict[str, Any]], database: str) -> None:
        self._contacts = client[database]["contacts"]

    async def put(self, contact: Contact) -> None:
        await self._contacts.update_one(
            {"_id": contact.request_id},
            {
                "$setOnInsert": {
                    "subject_id": contact.subject_id,
                    "email_ciphertext": contact.email_ciphertext,
                    "copies": list(contact.copies),
                }
            },
            upsert=True,
        )

    async def get(self, request_id: str) -> Contact | None:
        doc = await self._contacts.find_one({"_id": request_id})
        if doc is None:
            return None
        return Contact(doc["_id"], doc["subject_id"], doc["email_ciphertext"], tuple(doc.get("copies", ())))

    async def forget(self, request_id: str) -> None:
        await self._contacts.delete_one({"_id": request_id})
