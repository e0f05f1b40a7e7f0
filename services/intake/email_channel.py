"""The email channel: a person asks by address, gets a signed single-use link, and the deletion starts only when
they confirm it. The answer to the ask is the same whether or not the address is known (nothing leaks)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog

from services.intake import handlers
from services.intake.model import DeletionRequest
from services.intake.ports import AccountDirectory, ContactStore, RequestStore, Sealer
from services.intake.settings import IntakeSettings
from services.intake.verification import LinkClaims, issue_link_token, read_link_token, verification_mail
from shared.contacts import CONTACT_DATASET, Contact, email_lookup_hash
from shared.jurisdictions import Jurisdictions
from shared.smtp import send_mail

log = structlog.get_logger(__name__)


class ChannelNotConfiguredError(Exception):
    """No secret to sign links with."""


class LinkGoneError(Exception):
    """The link's request no longer exists."""


class LinkUsedError(Exception):
    """The link's request was already confirmed (or folded into another)."""


@dataclass
class EmailChannel:
    settings: IntakeSettings
    requests: RequestStore
    accounts: AccountDirectory
    contacts: ContactStore
    keyvault: Sealer | None
    clock: Callable[[], datetime]
    kick_relay: Callable[[], None]
    jurisdictions: Jurisdictions
    on_accepted: Callable[[DeletionRequest], None] = lambda _: None  # the acknowledgements job

    @property
    def link_secret(self) -> str:
        secret = self.settings.link_secret()
        if secret is None:
            raise ChannelNotConfiguredError("the email channel is not configured (no link secret)")
        return secret

    async def send_link(self, address: str) -> None:
        """Mail a confirmation link if the address belongs to an account; never raises (runs in the background)."""
        settings = self.settings
        try:
            subject_id = await self.accounts.subject_for(
                email_lookup_hash(address, settings.email_lookup_key.get_secret_value())
            )
            if subject_id is None:
                log.info("email_request.unknown_address")
                return
            if self.keyvault is None:
                log.error("email_request.no_keyvault", hint="set INTAKE_KEYVAULT_TOKEN to seal contact addresses")
                return
            now = self.clock()
            record = handlers.pending_verification(subject_id=subject_id, now=now)
            sealed = await self.keyvault.encrypt(subject_id, CONTACT_DATASET, address.encode())
            await self.contacts.put(Contact(record.request_id, subject_id, sealed))
            await self.requests.save(record)
            ttl = timedelta(seconds=settings.verification_ttl_s)
            claims = LinkClaims(record.request_id, subject_id)
            token = issue_link_token(self.link_secret, issuer=settings.auth.issuer, claims=claims, now=now, ttl=ttl)
            link = f"{settings.public_url.rstrip('/')}/deletion_requests/verify?token={token}"
            mail = verification_mail(
                sender=settings.smtp.sender, to=address, link=link, token=token, expires_at=now + ttl
            )
            await send_mail(settings.smtp, mail)
            log.info("email_request.verification_sent", request_id=record.request_id, subject_id=subject_id)
        except Exception:
            # The person gets no mail and may ask again; nothing was started.
            log.exception("email_request.failed")

    async def confirm(self, token: str) -> tuple[bool, DeletionRequest]:
        """Start the deletion a link names: (started, request). Raises ``InvalidLinkError``, :class:`LinkGoneError`,
        :class:`LinkUsedError` or ``RequestNotReadyError`` (retry)."""
        claims = read_link_token(self.link_secret, token, issuer=self.settings.auth.issuer)
        pending = await self.requests.get(claims.request_id)
        if pending is None or pending.subject_id != claims.subject_id:
            raise LinkGoneError(claims.request_id)
        if pending.superseded_by or "received" in pending.stages:
            raise LinkUsedError(claims.request_id)
        now = self.clock()
        started, record = await handlers.request_deletion(
            self.requests,
            subject_id=claims.subject_id,
            requested_by="email",
            channel="email",
            now=now,
            terms=handlers.terms_of(
                self.jurisdictions,
                await handlers.account_jurisdiction(self.accounts, self.jurisdictions, claims.subject_id),
                now=now,
                override_days=self.settings.deadline_days,
            ),
            backups=timedelta(days=self.settings.backups_days),
            cooling_off=timedelta(seconds=self.settings.cooling_off_s),
            request_id=claims.request_id,
        )
        if record.request_id != pending.request_id:
            # The subject already has an open request: this one is folded into it.
            await handlers.supersede(self.requests, pending.request_id, by=record.request_id)
        if started:
            self.kick_relay()
            self.on_accepted(record)
        return started, record
