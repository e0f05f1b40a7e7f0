"""Who writes and who reads each topic: the one declaration that the Kafka ACLs, the AsyncAPI document and a test
of every service's routes are all derived from.

A principal is a service (each has its own Kafka user) or ``upstream``, the product's own backends that ask for
deletions. Every consumer may also write the dead-letter twin (``<topic>.dlq``) of what it reads; audit reads
every dead-letter topic (the console lists them).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from shared import topics

SERVICES: Final = ("intake", "purger", "keyvault", "notifier", "audit")
UPSTREAM: Final = "upstream"
PRINCIPALS: Final = (*SERVICES, UPSTREAM)


@dataclass(frozen=True)
class Flow:
    """One topic: its key, who may write it, who reads it (a consumer group each, or a group-less reader)."""

    topic: str
    producers: tuple[str, ...]
    consumers: tuple[str, ...]
    key: str = "subject_id"
    # Read without a consumer group (every process sees every event): the key caches' invalidators.
    watchers: tuple[str, ...] = ()


# A hold on everyone has no subject: its events are keyed by their own id (Event.key).
_SUBJECT_OR_EVENT = "subject_id, or event_id for a hold on everyone"
# intake folds every deletion.* topic but the intents and rejections into a request's status; audit logs every topic.
_STATUS = ("intake", "audit")

FLOWS: Final[tuple[Flow, ...]] = (
    Flow(topics.DELETION_REQUESTED, ("intake",), ("purger", *_STATUS)),
    Flow(topics.DELETION_PURGED, ("purger",), ("keyvault", *_STATUS)),
    Flow(topics.DELETION_KEYS_DESTROYED, ("keyvault",), ("notifier", *_STATUS), watchers=("intake", "notifier")),
    Flow(topics.DELETION_KEYS_SHREDDED, ("keyvault",), _STATUS, watchers=("intake", "notifier")),
    Flow(topics.DELETION_KEYS_RESTORED, ("keyvault",), _STATUS),
    Flow(topics.DELETION_NOTIFIED, ("notifier",), _STATUS),
    Flow(topics.DELETION_HELD, ("purger",), ("keyvault", *_STATUS)),
    Flow(topics.DELETION_KEYS_HELD, ("keyvault",), _STATUS),
    Flow(topics.DELETION_HARD_DELETED, ("purger",), _STATUS),
    Flow(topics.DELETION_BACKUPS_EXPIRED, ("purger",), _STATUS),
    Flow(topics.DELETION_OVERDUE, ("intake",), ("notifier", *_STATUS)),
    Flow(topics.DELETION_PROCESSOR_CONFIRMED, ("intake",), ("purger", *_STATUS)),
    Flow(topics.DELETION_EXTENDED, ("intake",), ("notifier", *_STATUS)),
    Flow(topics.DELETION_DENIED, ("intake",), ("notifier", *_STATUS)),
    Flow(topics.DELETION_CANCELLED, ("intake",), ("notifier", *_STATUS)),
    Flow(topics.RETENTION_RULES_CHANGED, ("intake",), ("purger", "audit"), key="event_id"),
    Flow(topics.LEGAL_HOLD_PLACED, ("intake",), ("purger", "audit"), key=_SUBJECT_OR_EVENT),
    Flow(topics.LEGAL_HOLD_RELEASED, ("intake",), ("purger", "audit"), key=_SUBJECT_OR_EVENT),
    # The one command: upstream services ask for deletions, intake acts on them and answers those it refuses.
    Flow(topics.DELETION_INTENTS, (UPSTREAM,), ("intake", "audit")),
    Flow(
        topics.DELETION_REJECTED,
        ("intake",),
        ("audit", UPSTREAM),
        key="subject_id, or event_id when the intent had no valid subject id",
    ),
)


def flow(topic: str) -> Flow:
    for f in FLOWS:
        if f.topic == topic:
            return f
    raise KeyError(topic)


def consumed_by(principal: str) -> tuple[str, ...]:
    """The topics a principal's consumer group reads (in the order of ``FLOWS``)."""
    return tuple(f.topic for f in FLOWS if principal in f.consumers)


def produced_by(principal: str) -> tuple[str, ...]:
    return tuple(f.topic for f in FLOWS if principal in f.producers)
