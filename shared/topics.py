"""The Kafka topic names of lethe, in one place (docs/architecture.md, "The topic chain")."""

from typing import Final

DELETION_REQUESTED: Final = "deletion.requested"
DELETION_PURGED: Final = "deletion.purged"
DELETION_KEYS_DESTROYED: Final = "deletion.keys_destroyed"
DELETION_KEYS_SHREDDED: Final = "deletion.keys_shredded"
DELETION_KEYS_RESTORED: Final = "deletion.keys_restored"
DELETION_NOTIFIED: Final = "deletion.notified"
DELETION_HELD: Final = "deletion.held"
DELETION_KEYS_HELD: Final = "deletion.keys_held"
DELETION_HARD_DELETED: Final = "deletion.hard_deleted"
DELETION_BACKUPS_EXPIRED: Final = "deletion.backups_expired"
DELETION_OVERDUE: Final = "deletion.overdue"
# A processor (or an operator for it) confirmed or refused the erasure lethe asked of it.
DELETION_PROCESSOR_CONFIRMED: Final = "deletion.processor_confirmed"
# An operator extended a request's deadline, as its law allows (the person is told why).
DELETION_EXTENDED: Final = "deletion.extended"
# An operator refused a request, or the person cancelled it, before anything was erased (it ends there).
DELETION_DENIED: Final = "deletion.denied"
DELETION_CANCELLED: Final = "deletion.cancelled"
RETENTION_RULES_CHANGED: Final = "retention.rules_changed"
LEGAL_HOLD_PLACED: Final = "legal_hold.placed"
LEGAL_HOLD_RELEASED: Final = "legal_hold.released"
# The one command topic: upstream services ask for a deletion here, and intake answers on deletion.rejected
# when it will not act on one.
DELETION_INTENTS: Final = "deletion.intents"
DELETION_REJECTED: Final = "deletion.rejected"

EVENT_TOPICS: Final[tuple[str, ...]] = (
    DELETION_REQUESTED,
    DELETION_PURGED,
    DELETION_KEYS_DESTROYED,
    DELETION_KEYS_SHREDDED,
    DELETION_KEYS_RESTORED,
    DELETION_NOTIFIED,
    DELETION_HELD,
    DELETION_KEYS_HELD,
    DELETION_HARD_DELETED,
    DELETION_BACKUPS_EXPIRED,
    DELETION_OVERDUE,
    DELETION_PROCESSOR_CONFIRMED,
    DELETION_EXTENDED,
    DELETION_DENIED,
    DELETION_CANCELLED,
    RETENTION_RULES_CHANGED,
    LEGAL_HOLD_PLACED,
    LEGAL_HOLD_RELEASED,
    DELETION_INTENTS,
    DELETION_REJECTED,
)
DELETION_TOPICS: Final = tuple(t for t in EVENT_TOPICS if t.startswith("deletion."))
# What a request's status is folded from: every deletion.* topic but the intents and their rejections, which come
# before there is a request.
STATUS_TOPICS: Final = tuple(t for t in DELETION_TOPICS if t not in (DELETION_INTENTS, DELETION_REJECTED))
DLQ_SUFFIX: Final = ".dlq"


def dlq(topic: str) -> str:
    """Name of the dead-letter twin of ``topic``."""
    return topic + DLQ_SUFFIX


ALL_TOPICS: Final[tuple[str, ...]] = EVENT_TOPICS + tuple(dlq(t) for t in EVENT_TOPICS)
PARTITIONS: Final = 6
