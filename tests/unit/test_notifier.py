"""notifier's decisions: webhook ids, the retry schedule, signatures, the mail and how it ends, the SSRF table."""

import json
import traceback
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage

import aiosmtplib
import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError
from structlog.testing import capture_logs

from services.notifier.adapters.http import retry_after
from services.notifier.adapters.memory import InMemoryNoticeStore
from services.notifier.adapters.ssrf import UnsafeUrlError, check_url, forbidden_reason, literal_ip
from services.notifier.handlers import (
    Mail,
    MailResult,
    compose_mail,
    decide_after_attempt,
    mail_person,
    message_id,
    next_attempt_at,
    notified,
    send_deferred,
    webhook_payload,
)
from services.notifier.model import AttemptResult
from services.notifier.signing import new_secret, sign
from shared.contacts import CONTACT_DATASET, Contact
from shared.events import DatasetOutcome, DeletionKeysDestroyed, Event, KeyRef, RetainedKey
from shared.fakes import InMemoryContactStore, InMemoryKeyvault
from shared.scrub import scrub
from shared.settings import SmtpSettings
from shared.smtp import (
    MailDeferredError,
    MailError,
    MailRefusedError,
    MailServerUnavailableError,
    MailSetupError,
    send_mail,
)

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
SCHEDULE = (0, 5, 300, 1800)


def destroyed(result: str = "partial") -> DeletionKeysDestroyed:
    outcomes = [DatasetOutcome(dataset="profiles", store="mongo", outcome="erased")]
    retained = []
    if result == "partial":
        outcomes.append(
            DatasetOutcome(
                dataset="invoices",
                store="mongo",
                outcome="retained",
                rule_id="tax-10y",
                legal_basis="legal obligation (GDPR Art. 17(3)(b))",
                legal_ref="HGB §257",
            )
        )
        retained.append(
            RetainedKey(
                dataset="invoices",
                key_id="dek_" + "1" * 32,
                rule_id="tax-10y",
                legal_basis="legal obligation",
                legal_ref="HGB §257",
            )
        )
    return DeletionKeysDestroyed(
        request_id="req-1",
        subject_id="user-1",
        producer="keyvault",
        outcomes=tuple(outcomes),
        destroyed=(KeyRef(dataset="profiles", key_id="dek_" + "2" * 32),),
        retained=tuple(retained),
        result=result,
    )


def test_the_webhook_id_is_stable_per_event_and_endpoint():
    event = uuid.uuid4()
    assert message_id(event, "ep_a") == message_id(event, "ep_a")
    assert message_id(event, "ep_a") != message_id(event, "ep_b")
    assert message_id(event, "ep_a") != message_id(uuid.uuid4(), "ep_a")


def test_the_schedule_is_followed_with_jitter_and_ends():
    low = next_attempt_at(attempts_made=2, schedule=SCHEDULE, now=NOW, rand=lambda a, b: a)
    high = next_attempt_at(attempts_made=2, schedule=SCHEDULE, now=NOW, rand=lambda a, b: b)
    assert low == NOW + timedelta(seconds=270)
    assert high == NOW + timedelta(seconds=330)
    assert next_attempt_at(attempts_made=4, schedule=SCHEDULE, now=NOW) is None


def test_a_longer_retry_after_is_honoured():
    at = next_attempt_at(attempts_made=1, schedule=SCHEDULE, now=NOW, retry_after_s=120, rand=lambda a, b: 1.0)
    assert at == NOW + timedelta(seconds=120)


@pytest.mark.parametrize(
    ("code", "status", "disable"),
    [
        (200, "delivered", False),
        (204, "delivered", False),
        (301, "pending", False),
        (302, "pending", False),
        (500, "pending", False),
        (429, "pending", False),
        (410, "dead", True),
        (None, "pending", False),
    ],
)
def test_only_2xx_is_success_and_410_disables(code, status, disable):
    result = AttemptResult(code, None if code else "ConnectionError", 3)
    decision = decide_after_attempt(result, attempts_made=1, schedule=SCHEDULE, now=NOW)
    assert (decision.status, decision.disable_endpoint) == (status, disable)


def test_after_the_last_attempt_the_delivery_is_dead():
    decision = decide_after_attempt(AttemptResult(500, "HTTP 500", 3), attempts_made=4, schedule=SCHEDULE, now=NOW)
    assert decision.status == "dead"


def test_signatures_verify_with_the_standard_webhooks_library_and_tampering_fails():
    secret = new_secret()
    body = webhook_payload(destroyed())
    now = datetime.now(UTC)
    headers = sign(message_id="msg_1", timestamp=now, body=body, secrets=[secret])
    assert Webhook(secret).verify(body, headers)["type"] == "data_deletion.partial"
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body.replace("partial", "complete"), headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(body, headers)
    stale = sign(message_id="msg_1", timestamp=now - timedelta(minutes=6), body=body, secrets=[secret])
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body, stale)


def test_during_a_rotation_both_secrets_sign():
    old, new = new_secret(), new_secret()
    body = webhook_payload(destroyed("completed"))
    headers = sign(message_id="msg_1", timestamp=datetime.now(UTC), body=body, secrets=[old, new])
    assert len(headers["webhook-signature"].split(" ")) == 2
    assert Webhook(old).verify(body, headers)
    assert Webhook(new).verify(body, headers)


def test_the_payload_carries_outcomes_and_legal_references_but_no_personal_data():
    payload = json.loads(webhook_payload(destroyed()))
    assert payload["type"] == "data_deletion.partial"
    datasets = {d["dataset"]: d for d in payload["data"]["datasets"]}
    assert datasets["invoices"]["legal_ref"] == "HGB §257"
    assert "@" not in json.dumps(payload)


def test_the_mail_lists_what_was_kept_and_why():
    message = compose_mail(destroyed(), to="ada@example.test", sender="lethe <privacy@lethe.local>")
    text = message.get_body(preferencelist=("plain",)).get_content()
    assert "profiles" in text
    assert "invoices: legal obligation (GDPR Art. 17(3)(b)) (HGB §257)" in text
    assert message.get_body(preferencelist=("html",)) is not None
    assert "except what the law requires" in message["Subject"]


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/",
        "http://localhost/",
        "http://2130706433/",
        "http://0x7f000001/",
        "http://0177.0.0.1/",
        "http://127.1/",
        "http://[::1]/",
        "http://[::ffff:127.0.0.1]/",
        "http://[::ffff:7f00:1]/",
        "http://10.1.2.3/",
        "http://172.16.0.1/",
        "http://192.168.1.1/",
        "http://100.64.0.1/",
        "http://169.254.169.254/latest/meta-data",
        "http://[fd00:ec2::254]/",
        "http://[fe80::1]/",
        "http://[fc00::1]/",
        "http://0.0.0.0/",
        "http://224.0.0.1/",
        "http://[2002:7f00:1::]/",
        "ftp://example.com/",
        "http://user:pass@example.com/",
        "http:///nohost",
    ],
)
@pytest.mark.asyncio
async def test_unsafe_webhook_urls_are_refused(url):
    with pytest.raises(UnsafeUrlError):
        await check_url(url)


def test_loopback_is_allowed_only_when_the_local_profile_says_so():
    assert forbidden_reason(literal_ip("127.0.0.1"), allow_loopback=True) is None
    assert forbidden_reason(literal_ip("127.0.0.1")) == "a loopback address"
    assert forbidden_reason(literal_ip("10.0.0.1"), allow_loopback=True) == "a private address"
    assert forbidden_reason(literal_ip("93.184.215.14")) is None


# Retry-After: a receiver may slow us down, not break the schedule.


@pytest.mark.parametrize("retry_after_s", [1e12, float("inf"), 1e300])
def test_a_retry_after_beyond_the_schedules_longest_step_is_capped_at_that_step(retry_after_s):
    at = next_attempt_at(
        attempts_made=1, schedule=SCHEDULE, now=NOW, retry_after_s=retry_after_s, rand=lambda a, b: 1.0
    )
    expected = NOW + timedelta(seconds=max(SCHEDULE)) if retry_after_s != float("inf") else NOW + timedelta(seconds=5)
    assert at == expected


@pytest.mark.parametrize("retry_after_s", [float("nan"), float("inf"), -5.0, -1e12])
def test_a_retry_after_that_is_not_a_finite_positive_number_is_ignored(retry_after_s):
    at = next_attempt_at(attempts_made=2, schedule=SCHEDULE, now=NOW, retry_after_s=retry_after_s, rand=lambda a, b: 1)
    assert at == NOW + timedelta(seconds=300)


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        (None, None),
        ("120", 120.0),
        ("1e12", 1e12),  # passes the parser; the schedule caps it
        ("inf", None),
        ("-inf", None),
        ("nan", None),
        ("-5", None),
        ("soon", None),
        ("Fri, 31 Dec 99999 23:59:59 GMT", None),
        ("Sun, 01 Mar 2026 12:02:00 GMT", 120.0),
        ("Sun, 01 Mar 2026 11:00:00 GMT", 0.0),  # in the past: now
    ],
)
def test_retry_after_reads_seconds_and_http_dates_and_drops_what_is_unusable(header, seconds):
    assert retry_after(header, now=NOW) == seconds


def test_a_receiver_asking_to_wait_until_the_year_9999_is_tried_again_within_the_schedule():
    result = AttemptResult(503, "HTTP 503", 3, retry_after_s=retry_after("Fri, 31 Dec 9999 23:59:59 GMT", now=NOW))
    decision = decide_after_attempt(result, attempts_made=1, schedule=SCHEDULE, now=NOW)
    assert decision.status == "pending"
    assert decision.next_attempt_at == NOW + timedelta(seconds=max(SCHEDULE))


# Addresses never leave in error text.

ADDRESS = "ada.lovelace+erasure@example.test"


@pytest.mark.parametrize(
    "text",
    [
        f"550 5.1.1 <{ADDRESS}>: Recipient address rejected",
        f"SMTPRecipientsRefused([SMTPRecipientRefused(550, 'no such user', '{ADDRESS}')])",
        '"ada lovelace"@example.test bounced',
        "ädä@exämple.de is unknown",
        "mailto:ada%40example.test",
        "user@[192.0.2.1] refused",
        "ADA@EXAMPLE.TEST",
    ],
)
def test_anything_that_looks_like_an_address_is_scrubbed(text):
    scrubbed = scrub(text)
    assert "@" not in scrubbed
    assert "%40" not in scrubbed
    assert "<address>" in scrubbed
    assert "ada" not in scrubbed.lower().replace("<address>", "")


def test_text_without_an_address_is_left_alone():
    assert scrub("HTTP 503 from https://hooks.example.test/x") == "HTTP 503 from https://hooks.example.test/x"


def smtp_raising(monkeypatch, exc: BaseException) -> None:
    async def refuse(*_: object, **__: object) -> None:
        raise exc

    monkeypatch.setattr(aiosmtplib, "send", refuse)


def refused(code: int) -> aiosmtplib.SMTPRecipientsRefused:
    reply = f"5.1.1 <{ADDRESS}>: Recipient address rejected" if code >= 500 else f"4.2.0 <{ADDRESS}>: Greylisted"
    return aiosmtplib.SMTPRecipientsRefused([aiosmtplib.SMTPRecipientRefused(code, reply, ADDRESS)])


@pytest.mark.parametrize(
    ("raised", "kind", "code"),
    [
        (refused(550), MailRefusedError, 550),
        (refused(451), MailDeferredError, 451),
        (
            aiosmtplib.SMTPSenderRefused(552, f"message too big for <{ADDRESS}>", "privacy@lethe.local"),
            MailRefusedError,
            552,
        ),
        (aiosmtplib.SMTPDataError(554, f"rejected for <{ADDRESS}>"), MailRefusedError, 554),
        (aiosmtplib.SMTPDataError(452, f"mailbox of <{ADDRESS}> is full"), MailDeferredError, 452),
        (aiosmtplib.SMTPAuthenticationError(535, "bad credentials"), MailSetupError, 535),
        (aiosmtplib.SMTPConnectError(f"cannot reach the relay for {ADDRESS}"), MailServerUnavailableError, None),
        (aiosmtplib.SMTPServerDisconnected("lost"), MailServerUnavailableError, None),
        (aiosmtplib.SMTPReadTimeoutError("slow"), MailServerUnavailableError, None),
        (ConnectionRefusedError(111, "refused"), MailServerUnavailableError, None),
    ],
)
@pytest.mark.asyncio
async def test_smtp_failures_are_sorted_by_what_can_be_done_and_name_no_address(monkeypatch, raised, kind, code):
    smtp_raising(monkeypatch, raised)
    message = compose_mail(destroyed(), to=ADDRESS, sender="lethe <privacy@lethe.local>")
    with pytest.raises(MailError) as caught:
        await send_mail(SmtpSettings(), message)
    assert type(caught.value) is kind
    assert caught.value.code == code
    rendered = "".join(traceback.format_exception(caught.value))
    assert ADDRESS not in rendered
    assert "example.test" not in rendered  # not the cause either: it is dropped
    assert isinstance(caught.value, ConnectionError) == (kind is MailServerUnavailableError)


# The person's notice, with in-memory fakes.


class Outbox:
    """send_mail for tests: records what was sent, or raises what it is told to, in order."""

    def __init__(self, *failures: BaseException | None) -> None:
        self.failures = list(failures)
        self.sent: list[EmailMessage] = []

    async def __call__(self, message: EmailMessage) -> None:
        failure = self.failures.pop(0) if self.failures else None
        if failure is not None:
            raise failure
        self.sent.append(message)


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@dataclass
class World:
    mail: Mail
    notices: InMemoryNoticeStore
    contacts: InMemoryContactStore
    keyvault: InMemoryKeyvault
    outbox: Outbox
    clock: Clock
    published: list[Event] = field(default_factory=list)

    async def publish(self, event: Event) -> None:
        self.published.append(event)

    async def person(self, n: int = 1, address: str = ADDRESS) -> DeletionKeysDestroyed:
        event = destroyed().model_copy(update={"request_id": f"req-{n}", "subject_id": f"user-{n}"})
        sealed = await self.keyvault.encrypt(event.subject_id, CONTACT_DATASET, address.encode())
        await self.contacts.put(Contact(event.request_id, event.subject_id, sealed))
        return event

    def shredded(self, event: DeletionKeysDestroyed) -> bool:
        return (event.subject_id, CONTACT_DATASET) in self.keyvault.destroyed


def world(*failures: BaseException | None, cap: int = 100, send=None) -> World:
    notices, contacts, keyvault, outbox, clock = (
        InMemoryNoticeStore(),
        InMemoryContactStore(),
        InMemoryKeyvault(),
        Outbox(*failures),
        Clock(NOW),
    )
    mail = Mail(
        notices=notices,
        contacts=contacts,
        keyvault=keyvault,
        send=send or outbox,
        sender="lethe <privacy@lethe.local>",
        clock=clock,
        daily_cap=cap,
        give_up_after=timedelta(days=4),
    )
    return World(mail, notices, contacts, keyvault, outbox, clock)


def no_address_in(*things: object) -> bool:
    return all(ADDRESS not in repr(thing) and "example.test" not in repr(thing) for thing in things)


@pytest.mark.asyncio
async def test_a_sent_notice_shreds_the_contact_key_and_says_sent():
    w = world()
    event = await w.person()
    result = await mail_person(event, w.mail)
    event_out = notified(event, webhook_endpoints=2, mail=result)
    assert (result.outcome, event_out.mail, event_out.email_sent, event_out.smtp_code) == ("sent", "sent", True, None)
    assert [m["To"] for m in w.outbox.sent] == [ADDRESS]
    assert w.shredded(event)


@pytest.mark.asyncio
async def test_an_smtp_refusal_leaves_no_address_anywhere_and_ends_the_request_with_the_mail_failed(monkeypatch):
    smtp_raising(monkeypatch, refused(550))

    async def through_the_real_adapter(message: EmailMessage) -> None:
        await send_mail(SmtpSettings(), message)

    w = world(send=through_the_real_adapter)
    event = await w.person()
    with capture_logs() as logs:
        result = await mail_person(event, w.mail, webhook_endpoints=1)
    event_out = notified(event, webhook_endpoints=1, mail=result)
    notice = await w.notices.notice(event.request_id)

    assert (event_out.mail, event_out.smtp_code, event_out.email_sent) == ("failed", 550, False)
    assert (notice.mail_status, notice.smtp_code) == ("failed", 550)
    assert "<address>" in notice.error
    assert w.shredded(event)  # the address is gone although it was never used
    assert no_address_in(logs, notice, event_out.to_bytes())
    assert logs  # the refusal is logged, without the address


@pytest.mark.asyncio
async def test_an_event_consumed_again_after_a_refusal_reports_failed_again_and_mails_nobody():
    w = world(MailRefusedError("recipient refused: SMTP 550 <address>", 550))
    event = await w.person()
    first = await mail_person(event, w.mail)
    w.keyvault.destroyed.clear()  # as if the process died before the key was shredded
    again = await mail_person(event, w.mail)
    assert first == again
    assert again.outcome == "failed"
    assert w.outbox.sent == []
    assert w.shredded(event)
    twice = [notified(event, webhook_endpoints=0, mail=r).model_dump(exclude={"occurred_at"}) for r in (first, again)]
    assert twice[0] == twice[1]


@pytest.mark.asyncio
async def test_an_unreachable_server_raises_a_connection_error_and_records_nothing():
    w = world(MailServerUnavailableError("the server is unavailable: ConnectionRefusedError"))
    event = await w.person()
    with pytest.raises(ConnectionError):
        await mail_person(event, w.mail)
    assert await w.notices.notice(event.request_id) is None
    assert not w.shredded(event)
    assert (await mail_person(event, w.mail)).outcome == "sent"  # once it is back


@pytest.mark.asyncio
async def test_the_daily_cap_lets_exactly_cap_mails_through_and_defers_the_next_keeping_its_address_sealed():
    w = world(cap=2)
    events = [await w.person(n) for n in (1, 2, 3)]
    results = [await mail_person(e, w.mail, webhook_endpoints=1) for e in events]
    assert [r.outcome for r in results] == ["sent", "sent", "deferred"]
    third = await w.notices.notice("req-3")
    assert third.mail_status == "deferred"
    assert DeletionKeysDestroyed.model_validate_json(third.deferred_event) == events[2]
    assert not w.shredded(events[2])
    assert await w.contacts.get("req-3") is not None
    out = notified(events[2], webhook_endpoints=1, mail=results[2])
    assert (out.mail, out.email_sent, out.smtp_code) == ("deferred", False, None)


@pytest.mark.asyncio
async def test_mails_that_did_not_go_out_leave_the_days_count_unused():
    down = MailServerUnavailableError("the server is unavailable: ConnectionRefusedError")
    w = world(
        down, down, MailDeferredError("deferred: SMTP 452", 452), MailRefusedError("refused: SMTP 550", 550), cap=1
    )
    first, second, third = [await w.person(n) for n in (1, 2, 3)]
    for _ in range(2):
        with pytest.raises(ConnectionError):
            await mail_person(first, w.mail)
    assert (await mail_person(first, w.mail)).outcome == "deferred"  # 452
    assert (await mail_person(second, w.mail)).outcome == "failed"  # 550
    assert (await mail_person(third, w.mail)).outcome == "sent"  # the day's one place is still free
    assert await w.notices.mail_count(NOW.strftime("%Y-%m-%d")) == 1


@pytest.mark.asyncio
async def test_deferred_mails_go_out_oldest_first_as_the_days_allow_each_with_a_second_notified_event():
    w = world(cap=1)
    events = [await w.person(n) for n in (1, 2, 3)]
    for minute, event in enumerate(events):
        w.clock.now = NOW + timedelta(minutes=minute)
        await mail_person(event, w.mail, webhook_endpoints=3)
    first_ids = {notified(e, webhook_endpoints=3, mail=MailResult("deferred")).event_id for e in events[1:]}

    assert await send_deferred(w.mail, w.publish) == 0  # still the same day: nothing more goes out
    w.clock.now = NOW + timedelta(days=1)
    assert await send_deferred(w.mail, w.publish) == 1
    w.clock.now = NOW + timedelta(days=2)
    assert await send_deferred(w.mail, w.publish) == 1

    assert "req-2" in w.outbox.sent[1]["Message-ID"]  # the older one first
    assert "req-3" in w.outbox.sent[2]["Message-ID"]
    assert [(e.request_id, e.mail, e.email_sent, e.webhook_endpoints) for e in w.published] == [
        ("req-2", "sent", True, 3),
        ("req-3", "sent", True, 3),
    ]
    assert not first_ids & {e.event_id for e in w.published}
    assert all(w.shredded(e) for e in events)
    assert await send_deferred(w.mail, w.publish) == 0  # and nothing twice


@pytest.mark.asyncio
async def test_an_event_consumed_again_after_its_deferred_mail_went_out_still_reports_deferred():
    w = world(cap=0)
    event = await w.person()
    first = await mail_person(event, w.mail)
    w.mail.daily_cap = 1
    await send_deferred(w.mail, w.publish)
    again = await mail_person(event, w.mail)
    assert first == again == MailResult("deferred")
    assert len(w.outbox.sent) == 1


@pytest.mark.asyncio
async def test_a_deferred_mail_refused_for_good_later_fails_shreds_the_key_and_says_so():
    w = world(MailRefusedError("recipient refused: SMTP 550 <address>", 550), cap=0)
    event = await w.person()
    await mail_person(event, w.mail)
    w.mail.daily_cap = 5
    await send_deferred(w.mail, w.publish)
    [follow_up] = w.published
    assert (follow_up.mail, follow_up.smtp_code, follow_up.email_sent) == ("failed", 550, False)
    assert w.shredded(event)


@pytest.mark.asyncio
async def test_a_4xx_reply_defers_the_mail_and_it_fails_once_the_server_kept_refusing_for_days():
    greylisted = MailDeferredError("recipient deferred: SMTP 451 <address>", 451)
    w = world(*[greylisted] * 200)
    event = await w.person()
    first = await mail_person(event, w.mail)
    assert first == MailResult("deferred", 451, "recipient deferred: SMTP 451 <address>")
    assert not w.shredded(event)
    w.clock.now += timedelta(minutes=4)
    await send_deferred(w.mail, w.publish)
    assert len(w.outbox.failures) == 199  # not due yet: 5 minutes first
    while not w.published:
        w.clock.now += timedelta(hours=1)
        await send_deferred(w.mail, w.publish)
    [follow_up] = w.published
    assert (follow_up.mail, follow_up.smtp_code) == ("failed", 451)
    assert w.clock.now - NOW >= timedelta(days=4)
    assert w.shredded(event)


@pytest.mark.asyncio
async def test_the_deferred_job_leaves_the_mail_waiting_while_the_server_is_down():
    w = world(MailServerUnavailableError("the server is unavailable: ConnectionRefusedError"), cap=0)
    event = await w.person()
    await mail_person(event, w.mail)
    w.mail.daily_cap = 5
    assert await send_deferred(w.mail, w.publish) == 0
    assert (await w.notices.notice(event.request_id)).mail_status == "deferred"
    assert await send_deferred(w.mail, w.publish) == 1
    assert [e.mail for e in w.published] == ["sent"]


@pytest.mark.asyncio
async def test_a_follow_up_that_could_not_be_published_is_published_by_the_next_round_without_mailing_again():
    w = world(cap=0)
    event = await w.person()
    await mail_person(event, w.mail)
    w.mail.daily_cap = 5

    async def kafka_down(_: Event) -> None:
        raise ConnectionError("broker unavailable")

    with pytest.raises(ConnectionError):
        await send_deferred(w.mail, kafka_down)
    w.clock.now += w.mail.lease  # the claim of the round that failed runs out
    assert await send_deferred(w.mail, w.publish) == 1
    assert [e.mail for e in w.published] == ["sent"]
    assert len(w.outbox.sent) == 1


@pytest.mark.asyncio
async def test_the_delivery_worker_is_woken_once_an_event_is_handled_not_only_on_its_timer():
    import asyncio

    from services.notifier.app import waking

    wake = asyncio.Event()
    handled: list[str] = []

    async def handler(event):
        handled.append(event.type)
        assert not wake.is_set()  # woken after the handler stored its deliveries, not before
        return ()

    route = waking({"deletion.keys_destroyed": handler}, wake)["deletion.keys_destroyed"]
    await route(destroyed())
    assert handled == ["deletion.keys_destroyed"] and wake.is_set()


# --- An extension: the integrators and the person are told, once ------------------------------------------------


@pytest.mark.asyncio
async def test_an_extension_is_announced_to_subscribed_integrators_and_mailed_to_the_person_once():
    from services.notifier.adapters.memory import InMemoryWebhookStore
    from services.notifier.handlers import EXTENDED, Notifier, on_extended
    from services.notifier.model import Endpoint, Secret
    from shared.events import DeletionExtended

    store, contacts, keyvault, outbox = InMemoryWebhookStore(), InMemoryContactStore(), InMemoryKeyvault(), Outbox()
    for endpoint_id, types in (("ep_all", (EXTENDED,)), ("ep_done", ("data_deletion.completed",))):
        await store.add_endpoint(
            Endpoint(endpoint_id, "https://hooks.example/x", types, (Secret(new_secret(), NOW),), NOW)
        )
    sealed = await keyvault.encrypt("user-1", CONTACT_DATASET, ADDRESS.encode())
    await contacts.put(Contact("req-1", "user-1", sealed))
    n = Notifier(store, contacts, keyvault, outbox, "lethe <privacy@lethe.local>", Clock(NOW), (0, 5), 100)
    event = DeletionExtended(
        request_id="req-1",
        subject_id="user-1",
        producer="intake",
        extension=1,
        deadline_at=NOW + timedelta(days=90),
        previous_deadline_at=NOW + timedelta(days=30),
        jurisdiction="gdpr",
        legal_ref="Art. 12(3) GDPR",
        reason="the archive must be restored first",
        extended_by="dpo",
    )
    assert await on_extended(event, n) == ()
    assert await on_extended(event, n) == ()  # a replay
    [delivery] = await store.deliveries_for_request("req-1")
    assert (delivery.endpoint_id, delivery.event_type) == ("ep_all", EXTENDED)
    data = json.loads(delivery.payload)["data"]
    assert (data["reason"], data["legal_ref"], data["extension"]) == (event.reason, "Art. 12(3) GDPR", 1)
    [mail] = outbox.sent
    assert mail["To"] == ADDRESS and "more time" in mail["Subject"]
    text = mail.get_content()
    assert "2026-05-30" in text and "2026-03-31" in text and event.reason in text and "Art. 12(3) GDPR" in text
    assert (event.subject_id, CONTACT_DATASET) not in keyvault.destroyed  # the final notice still needs the address


@pytest.mark.asyncio
async def test_a_denial_and_a_cancellation_are_announced_mailed_once_and_then_the_address_is_shredded():
    from services.notifier.adapters.memory import InMemoryWebhookStore
    from services.notifier.handlers import CANCELLED, DENIED, Notifier, on_closed
    from services.notifier.model import Endpoint, Secret
    from shared.events import DeletionCancelled, DeletionDenied

    store, contacts, keyvault, outbox = InMemoryWebhookStore(), InMemoryContactStore(), InMemoryKeyvault(), Outbox()
    await store.add_endpoint(
        Endpoint("ep_all", "https://hooks.example/x", (DENIED, CANCELLED), (Secret(new_secret(), NOW),), NOW)
    )
    for rid, sid in (("req-1", "user-1"), ("req-2", "user-2")):
        await contacts.put(Contact(rid, sid, await keyvault.encrypt(sid, CONTACT_DATASET, ADDRESS.encode())))
    n = Notifier(store, contacts, keyvault, outbox, "lethe <privacy@lethe.local>", Clock(NOW), (0, 5), 100)
    denial = DeletionDenied(
        request_id="req-1",
        subject_id="user-1",
        producer="intake",
        occurred_at=NOW,
        jurisdiction="gdpr",
        legal_basis="Art. 17(3)(e) GDPR: the data is needed to defend a legal claim",
        reference="CASE-17",
        legal_ref="Art. 17(3) and Art. 12(4) GDPR",
        complaint="the right to lodge a complaint with a supervisory authority (Art. 77 GDPR)",
        denied_by="dpo",
    )
    assert await on_closed(denial, n) == ()
    assert await on_closed(denial, n) == ()  # a replay: no second mail, no second delivery
    [delivery] = await store.deliveries_for_request("req-1")
    assert delivery.event_type == DENIED
    data = json.loads(delivery.payload)["data"]
    assert (data["reference"], data["legal_ref"]) == ("CASE-17", "Art. 17(3) and Art. 12(4) GDPR")
    assert ADDRESS not in delivery.payload
    [mail] = outbox.sent
    assert mail["To"] == ADDRESS and "refused" in mail["Subject"]
    text = mail.get_content()
    assert "Nothing has been erased" in text and "CASE-17" in text and "Art. 77 GDPR" in text
    assert denial.legal_basis in text
    assert ("user-1", CONTACT_DATASET) in keyvault.destroyed  # the request is over: its address goes

    cancel = DeletionCancelled(
        request_id="req-2", subject_id="user-2", producer="intake", occurred_at=NOW, via="link", cancelled_by="user-2"
    )
    assert await on_closed(cancel, n) == ()
    [delivery] = await store.deliveries_for_request("req-2")
    assert delivery.event_type == CANCELLED and json.loads(delivery.payload)["data"]["via"] == "link"
    assert len(outbox.sent) == 2 and "cancelled" in outbox.sent[1]["Subject"]
    assert "Nothing has been erased" in outbox.sent[1].get_content()
    assert ("user-2", CONTACT_DATASET) in keyvault.destroyed
