"""MongoDB through PyMongo's AsyncMongoClient (the successor of the deprecated motor)."""

from __future__ import annotations

from typing import Any

from pymongo import AsyncMongoClient

from shared.settings import MongoSettings


def create_mongo_client(settings: MongoSettings) -> AsyncMongoClient[dict[str, Any]]:
    """A client for one event loop; it connects lazily, so creating it does no I/O."""
    return AsyncMongoClient(
        settings.url.get_secret_value(),
        serverSelectionTimeoutMS=5000,
        appname="lethe",
        tz_aware=True,
    )


async def mongo_ping(client: AsyncMongoClient[dict[str, Any]]) -> bool:
    reply = await client.admin.command("ping")
    return bool(reply.get("ok"))
