"""An in-memory NoticeStore, for unit tests; the same contract test runs against it and MongoWebhookStore."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta

from services.notifier.adapters.store import Notice


class InMemoryNoticeStore:
    def __init__(self) -> None:
        self.notices: dict[str, Notice] = {}
        self.leases: dict[str, datetime] = {}
        self.counters: dict[str, int] = {}

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
