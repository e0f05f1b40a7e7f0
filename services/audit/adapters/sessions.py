"""The console's sign-ins in MongoDB (``console_sessions``), keyed by the hash of their id."""

from __future__ import annotations

import hashlib
import secrets
from datetime import UTC, datetime
from typing import Any

from pymongo import AsyncMongoClient

from services.audit.model import Session


def _digest(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


class MongoConsoleSessions:
    """Sign-ins, by the hash of their id: a leaked database does not hand out live cookies."""

    def __init__(self, client: AsyncMongoClient[dict[str, Any]], database: str) -> None:
        self._sessions = client[database]["console_sessions"]

    async def create(self, session: Session) -> str:
        session_id = secrets.token_urlsafe(32)
        await self._sessions.insert_one(
            {
                "_id": _digest(session_id),
                "token": session.token,
                "csrf": session.csrf,
                "operator": session.operator,
                "scopes": sorted(session.scopes),
                "expires_at": session.expires_at,
            }
        )
        return session_id

    async def get(self, session_id: str, now: datetime) -> Session | None:
        doc = await self._sessions.find_one({"_id": _digest(session_id)})
        if doc is None:
            return None
        expires = doc["expires_at"] if doc["expires_at"].tzinfo else doc["expires_at"].replace(tzinfo=UTC)
        if expires <= now:
            await self.delete(session_id)
            return None
        return Session(doc["token"], doc["csrf"], doc["operator"], frozenset(doc["scopes"]), expires)

    async def delete(self, session_id: str) -> None:
        await self._sessions.delete_one({"_id": _digest(session_id)})
