"""Processors' answers: a processor (a third party that received the data, GDPR Art. 17(2) and 19) confirms or
refuses the erasure lethe asked of it, with a Standard Webhooks signature under its own secret; or an operator
answers for it, with a note. Either way the answer is stored with the request's claim for the relay to publish as
``deletion.processor_confirmed`` (the purger records it as the dataset's outcome and reports every outcome again).

A request waits in ``awaiting_confirmation`` until every processor answered; it stays open, so the deadline watch
warns about it like any other open request.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import structlog
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from services.intake.ports import RequestStore
from shared.datamap import DataMap
from shared.events import ConfirmedVia, DeletionProcessorConfirmed

log = structlog.get_logger(__name__)
_IDS = uuid.UUID("5c0b7f7e-3f4e-4d5e-9a53-0c3b5f1f8e21")
PRODUCER = "intake"


class UnknownProcessorError(LookupError):
    """The data map has no processor dataset of that name."""


class UnknownRequestError(LookupError):
    """No such request."""


class NotAwaitedError(Exception):
    """The request does not wait for this dataset's confirmation (answered already, or never asked)."""


class BadSignatureError(Exception):
    """The callback is not signed with the processor's secret (or its timestamp is too old)."""


@dataclass
class ProcessorAnswers:
    datamap: DataMap
    secrets: Mapping[str, str]  # processor dataset -> its whsec_ secret
    requests: RequestStore
    clock: Callable[[], datetime]
    kick_relay: Callable[[], None]

    def verify(self, dataset: str, body: bytes, headers: Mapping[str, str]) -> None:
        """Check the callback's Standard Webhooks signature with the named processor's secret."""
        secret = self.secrets.get(dataset)
        if secret is None:
            raise UnknownProcessorError(dataset)
        try:
            Webhook(secret).verify(body, dict(headers))
        except WebhookVerificationError as exc:
            raise BadSignatureError(str(exc)) from exc

    async def answer(
        self,
        request_id: str,
        dataset: str,
        outcome: Literal["erased", "refused"],
        *,
        via: ConfirmedVia,
        by: str,
        reason: str | None,
    ) -> DeletionProcessorConfirmed:
        """Record the answer for publication; raises if the request does not wait for this dataset."""
        if not any(d.name == dataset for d in self.datamap.processors):
            raise UnknownProcessorError(dataset)
        record = await self.requests.get(request_id)
        if record is None:
            raise UnknownRequestError(request_id)
        if dataset not in record.awaiting:
            current = record.outcomes.get(dataset)
            raise NotAwaitedError(
                f"request {request_id} does not wait for {dataset} "
                f"(its outcome is {current.outcome if current else 'not reported yet'})"
            )
        event = DeletionProcessorConfirmed(
            event_id=uuid.uuid5(_IDS, f"{request_id}:{dataset}"),  # one answer per dataset and request
            occurred_at=self.clock(),
            request_id=request_id,
            subject_id=record.subject_id,
            producer=PRODUCER,
            dataset=dataset,
            outcome=outcome,
            via=via,
            confirmed_by=by,
            reason=reason,
        )
        if not await self.requests.announce(record.subject_id, request_id, event):
            raise NotAwaitedError(f"request {request_id} is closed")
        self.kick_relay()
        log.info("processor.answered", request_id=request_id, dataset=dataset, outcome=outcome, via=via)
        return event


def dataset_of(body: bytes) -> str:
    """The ``dataset`` a callback names (read before its signature is checked, to choose the secret)."""
    try:
        value = json.loads(body).get("dataset")
    except (ValueError, AttributeError):
        value = None
    return value if isinstance(value, str) else ""
