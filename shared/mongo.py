"""MongoDB through PyMongo's AsyncMongoClient (the successor of the deprecated motor)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector
from pymongo import AsyncMongoClient
from pymongo.monitoring import CommandFailedEvent, CommandListener, CommandStartedEvent, CommandSucceededEvent

from shared.settings import MongoSettings

# Commands the driver sends to keep its connections alive, not on behalf of lethe's work.
_HOUSEKEEPING = frozenset({"hello", "ismaster", "isMaster", "ping", "endSessions", "saslStart", "saslContinue"})


class CommandCount(CommandListener):
    """Counts the commands (round trips) one client sends, by command name: what a deletion costs the store."""

    def __init__(self) -> None:
        self.by_command: Counter[str] = Counter()

    def started(self, event: CommandStartedEvent) -> None:
        if event.command_name not in _HOUSEKEEPING:
            self.by_command[event.command_name] += 1

    def succeeded(self, event: CommandSucceededEvent) -> None:
        pass

    def failed(self, event: CommandFailedEvent) -> None:
        pass


class CommandCountCollector(Collector):
    """``lethe_mongo_commands_total{command}`` on a service's /metrics, read from its client's ``CommandCount``."""

    def __init__(self, count: CommandCount) -> None:
        self._count = count

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(
            "lethe_mongo_commands",
            "MongoDB commands (round trips) sent by this process, by command.",
            labels=["command"],
        )
        for command, n in sorted(self._count.by_command.items()):
            family.add_metric([command], n)
        yield family


def create_mongo_client(settings: MongoSettings) -> AsyncMongoClient[dict[str, Any]]:
    """A client for one event loop; it connects lazily, so creating it does no I/O. Its commands are counted
    (``command_count``)."""
    return AsyncMongoClient(
        settings.url.get_secret_value(),
        serverSelectionTimeoutMS=5000,
        appname="lethe",
        tz_aware=True,
        event_listeners=[CommandCount()],
    )


def command_count(client: AsyncMongoClient[dict[str, Any]]) -> CommandCount:
    """The command counter ``create_mongo_client`` attached to ``client``."""
    return next(x for x in client.options.event_listeners if isinstance(x, CommandCount))


async def mongo_ping(client: AsyncMongoClient[dict[str, Any]]) -> bool:
    reply = await client.admin.command("ping")
    return bool(reply.get("ok"))
