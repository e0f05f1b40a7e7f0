"""Starting a deletion, whoever asks: the one use case behind ``DELETE /users/{id}/data`` and the bus's intents."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog

from services.intake import handlers
from services.intake.handlers import (
    IdempotencyKeyBusyError,
    IdempotencyKeyReusedError,
    RequestNotReadyError,
)
from services.intake.model import AuthorisedAgent, DeletionRequest, StoredReply
from services.intake.ports import AccountDirectory, ContactStore, RequestStore, Sealer
from services.intake.settings import IntakeSettings
from shared.contacts import CONTACT_DATASET, Contact
from shared.datamap import DataMap
from shared.events import Channel
from shared.jurisdictions import Jurisdictions
from shared.keyvault_client import KEYVAULT_FAILURES

log = structlog.get_logger(__name__)

# How long a first request with an idempotency key holds it before another may take over (its holder died).
IDEMPOTENCY_LEASE = timedelta(seconds=30)
# Reading and sealing the address may fail in these ways; the deletion goes ahead without the final mail.
CONTACT_FAILURES: tuple[type[Exception], ...] = (*KEYVAULT_FAILURES, UnicodeDecodeError, ValueError)


@dataclass
class Deletions:
    """What starting a deletion needs; app.py builds one that the HTTP API and the intent handler share."""

    settings: IntakeSettings
    datamap: DataMap
    requests: RequestStore
    accounts: AccountDirectory
    contacts: ContactStore
    keyvault: Sealer | None
    clock: Callable[[], datetime]
    kick_relay: Callable[[], None]
    jurisdictions: Jurisdictions
    on_accepted: Callable[[DeletionRequest], None] = lambda _: None  # the acknowledgements job

    async def start(
        self,
        subject_id: str,
        *,
        requested_by: str,
        channel: Channel,
        jurisdiction: str | None = None,
        agent: AuthorisedAgent | None = None,
    ) -> tuple[bool, DeletionRequest]:
        """Start a deletion, or return the subject's open one: (started, request).

        The account's address is kept first (for the final notice; an authorised ``agent``'s too, who gets every
        notice the person gets), then the request is claimed and stored with its deadline, and the relay is woken to
        publish ``deletion.requested``. Raises :class:`RequestNotReadyError` when another request for the subject is
        being stored (retry shortly).
        """
        now = self.clock()
        # The caller's jurisdiction (an unknown one is refused before anything is stored), else the account's.
        terms = handlers.terms_of(
            self.jurisdictions,
            jurisdiction or await handlers.account_jurisdiction(self.accounts, self.jurisdictions, subject_id),
            now=now,
            override_days=self.settings.deadline_days,
        )
        request_id = handlers.new_request_id()
        captured = await self.capture_contact(subject_id, request_id, agent.email if agent else None)
        try:
            started, record = await handlers.request_deletion(
                self.requests,
                subject_id=subject_id,
                requested_by=requested_by,
                channel=channel,
                now=now,
                terms=terms,
                backups=timedelta(days=self.settings.backups_days),
                cooling_off=timedelta(seconds=self.settings.cooling_off_s),
                request_id=request_id,
                agent=agent.public if agent else None,
            )
        except RequestNotReadyError:
            if captured:
                await self.contacts.forget(request_id)  # no request was stored under this id
            raise
        if captured and record.request_id != request_id:
            await self.contacts.forget(request_id)  # the subject's open request already has its contact
        if started:
            self.kick_relay()
            self.on_accepted(record)
            log.info("request.received", request_id=record.request_id, subject_id=subject_id, channel=channel)
        return started, record

    async def capture_contact(self, subject_id: str, request_id: str, agent_address: str | None = None) -> bool:
        """Keep the account's address for the final notice, sealed under the subject's contact key, and an
        authorised agent's beside it.

        It is read now, before the purge erases the account and keyvault shreds its key. Without it the
        deletion still goes ahead; only the person's mail is not sent (the request shows it).
        """
        if self.keyvault is None:
            return False
        try:
            addresses = [a for a in (await self._account_address(subject_id, self.keyvault), agent_address) if a]
            if not addresses:
                return False
            sealed = [await self.keyvault.encrypt(subject_id, CONTACT_DATASET, a.encode()) for a in addresses]
            await self.contacts.put(Contact(request_id, subject_id, sealed[0], tuple(sealed[1:])))
            return True
        except CONTACT_FAILURES as exc:
            log.warning("request.contact_not_kept", subject_id=subject_id, error=repr(exc))
            return False

    async def _account_address(self, subject_id: str, keyvault: Sealer) -> str | None:
        """The account's address in the clear (opened by keyvault where the data map encrypts it), or None."""
        settings = self.settings
        if settings.accounts_dataset not in self.datamap.names:
            return None
        accounts = self.datamap.get(settings.accounts_dataset)
        stored = await self.accounts.stored_address(subject_id)
        if stored is None:
            return None
        if settings.email_address_field not in accounts.encrypted_fields:
            return stored
        return (await keyvault.decrypt(subject_id, accounts.name, stored)).decode()

    async def once_waiting(
        self, key: str, *, fingerprint: str, run: Callable[[], Awaitable[tuple[int, dict[str, Any]]]]
    ) -> tuple[StoredReply, bool]:
        """:meth:`once`, waiting up to about 5 s for a concurrent first use of the same key to finish. Raises
        :class:`IdempotencyKeyBusyError` if it is still running then."""
        for _ in range(50):
            try:
                return await self.once(key, fingerprint=fingerprint, run=run)
            except IdempotencyKeyBusyError:
                await asyncio.sleep(0.1)
        raise IdempotencyKeyBusyError(key)

    async def once(
        self, key: str, *, fingerprint: str, run: Callable[[], Awaitable[tuple[int, dict[str, Any]]]]
    ) -> tuple[StoredReply, bool]:
        """Run ``run`` once per idempotency key, keeping its answer: (answer, replayed).

        ``key`` is already scoped to whoever asks. Raises :class:`IdempotencyKeyReusedError` when the key was used for
        another request (``fingerprint``) and :class:`IdempotencyKeyBusyError` while its first use is still running.
        """
        reserved = await self.requests.reserve_key(
            key, fingerprint=fingerprint, now=self.clock(), lease=IDEMPOTENCY_LEASE
        )
        if reserved == "mismatch":
            raise IdempotencyKeyReusedError(key)
        if isinstance(reserved, StoredReply):
            return reserved, True
        if reserved == "busy":
            raise IdempotencyKeyBusyError(key)
        try:
            status, body = await run()
        except BaseException:
            await self.requests.forget_key(key)
            raise
        reply = StoredReply(fingerprint, status, body)
        await self.requests.complete_key(key, reply=reply, now=self.clock())
        return reply, False
