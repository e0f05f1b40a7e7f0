"""notifier's stores in memory, for unit tests: the same contract test (tests/integration/test_notifier_store.py)
runs against them and MongoWebhookStore."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta

from services.notifier.model import Attempt, Delivery, DeliveryStatus, Endpoint, Notice, Secret


class InMemoryNoticeStore:
    """The NoticeStore port in memory."""

    def __init__(self) -> None:
        self.notices: dict[str, Notice] = {}
        self.leases: dict[str, datetime] = {}
        self.counters: dict[str, int] = {}
        self.mailed_at: dict[str, datetime] = {}

    async def notice(self, request_id: str) -> Notice | None:
        return self.notices.get(request_id)

    async def save_notice(self, notice: Notice) -> None:
        self.notices[notice.request_id] = dataclasses.replace(notice)
        self.leases.pop(notice.request_id, None)

    async def claim_deferred(
        self, now: datetime, *, lease: timedelta, limit: int = 20, mails: bool = True
    ) -> list[Notice]:
        due = sorted(
            (
                n
                for n in self.notices.values()
                if (mails and n.mail_status == "deferred" and n.next_try_at is not None and n.next_try_at <= now)
                or n.follow_up == "pending"
            ),
            key=lambda n: (n.deferred_at or datetime.min.replace(tzinfo=now.tzinfo), n.request_id),
        )
        claimed = [n for n in due if self.leases.get(n.request_id, now) <= now][:limit]
        for notice in claimed:
            self.leases[notice.request_id] = now + lease
        return claimed

    async def count_mail(self, day: str) -> int:
        self.counters[day] = self.counters.get(day, 0) + 1
        return self.counters[day]

    async def uncount_mail(self, day: str) -> None:
        self.counters[day] -= 1

    async def mail_count(self, day: str) -> int:
        return self.counters.get(day, 0)

    async def mark_mailed(self, request_id: str, at: datetime) -> None:
        self.mailed_at.setdefault(request_id, at)

    async def mailed(self, request_id: str) -> bool:
        return request_id in self.mailed_at


@dataclasses.dataclass
class _Due:
    """An entry of the pending ledger: when the delivery is due, and until when a worker holds it."""

    next_attempt_at: datetime | None
    lease_until: datetime | None = None


class InMemoryWebhookStore(InMemoryNoticeStore):
    """The WebhookStore port in memory: endpoints, deliveries and their pending ledger, and the notices."""

    def __init__(self) -> None:
        super().__init__()
        self.all_endpoints: dict[str, Endpoint] = {}
        self.deliveries: dict[str, Delivery] = {}
        self.pending: dict[str, _Due] = {}

    async def add_endpoint(self, endpoint: Endpoint) -> None:
        if endpoint.endpoint_id in self.all_endpoints:
            raise KeyError(f"endpoint {endpoint.endpoint_id} exists")  # as MongoDB refuses a duplicate _id
        self.all_endpoints[endpoint.endpoint_id] = endpoint

    async def endpoint(self, endpoint_id: str) -> Endpoint | None:
        return self.all_endpoints.get(endpoint_id)

    async def endpoints(self, *, after: str | None = None, limit: int = 100) -> list[Endpoint]:
        return [self.all_endpoints[i] for i in sorted(self.all_endpoints) if not after or i > after][:limit]

    async def delete_endpoint(self, endpoint_id: str) -> bool:
        return self.all_endpoints.pop(endpoint_id, None) is not None

    async def set_secrets(self, endpoint_id: str, secrets: tuple[Secret, ...]) -> None:
        if endpoint := self.all_endpoints.get(endpoint_id):
            self.all_endpoints[endpoint_id] = dataclasses.replace(endpoint, secrets=secrets)

    async def disable_endpoint(self, endpoint_id: str, reason: str) -> None:
        if endpoint := self.all_endpoints.get(endpoint_id):
            self.all_endpoints[endpoint_id] = dataclasses.replace(endpoint, status="disabled", disabled_reason=reason)

    async def schedule(self, delivery: Delivery) -> bool:
        existing = self.deliveries.setdefault(delivery.message_id, delivery)
        if existing is not delivery and existing.status != "pending":
            return False
        self.pending.setdefault(delivery.message_id, _Due(delivery.next_attempt_at))
        return existing is delivery

    async def claim_due(self, now: datetime, *, lease: timedelta, limit: int = 50) -> list[Delivery]:
        due = sorted(
            (
                (entry.next_attempt_at, message_id)
                for message_id, entry in self.pending.items()
                if entry.next_attempt_at is not None
                and entry.next_attempt_at <= now
                and (entry.lease_until is None or entry.lease_until <= now)
            ),
        )[:limit]
        claimed = []
        for _, message_id in due:
            self.pending[message_id].lease_until = now + lease
            delivery = self.deliveries.get(message_id)
            if delivery is None or delivery.status != "pending":
                del self.pending[message_id]
                continue
            claimed.append(delivery)
        return claimed

    async def record_attempt(
        self, message_id: str, attempt: Attempt, *, status: DeliveryStatus, next_attempt_at: datetime | None
    ) -> None:
        if delivery := self.deliveries.get(message_id):
            self.deliveries[message_id] = dataclasses.replace(
                delivery, attempts=(*delivery.attempts, attempt), status=status, next_attempt_at=next_attempt_at
            )
        if status != "pending":
            self.pending.pop(message_id, None)
        elif message_id in self.pending:
            self.pending[message_id] = _Due(next_attempt_at)

    async def delivery(self, message_id: str) -> Delivery | None:
        return self.deliveries.get(message_id)

    async def deliveries_of(self, endpoint_id: str, *, after: str | None = None, limit: int = 100) -> list[Delivery]:
        ids = sorted(i for i, d in self.deliveries.items() if d.endpoint_id == endpoint_id and (not after or i > after))
        return [self.deliveries[i] for i in ids[:limit]]

    async def deliveries_for_request(self, request_id: str, *, limit: int = 100) -> list[Delivery]:
        ids = sorted(i for i, d in self.deliveries.items() if d.request_id == request_id)
        return [self.deliveries[i] for i in ids[:limit]]

    async def redeliver(self, message_id: str, now: datetime) -> None:
        if delivery := self.deliveries.get(message_id):
            self.deliveries[message_id] = dataclasses.replace(delivery, status="pending", next_attempt_at=now)
        self.pending[message_id] = _Due(now)
