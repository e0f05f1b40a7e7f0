"""notifier on the real stack: signed deliveries to a loopback receiver, retries, 410, restarts, and the mail."""

import asyncio
import email
import email.policy
import uuid
from datetime import timedelta

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web
from aiokafka import AIOKafkaConsumer
from standardwebhooks.webhooks import Webhook, WebhookVerificationError
from structlog.testing import capture_logs

from services.keyvault.app import create_app as create_keyvault
from services.keyvault.settings import KeyvaultSettings
from services.notifier import handlers
from services.notifier.adapters.http import WebhookSender
from services.notifier.adapters.store import MongoWebhookStore
from services.notifier.app import create_app as create_notifier
from services.notifier.model import Endpoint, Secret
from services.notifier.settings import NotifierSettings
from services.notifier.signing import new_secret
from shared import topics
from shared.auth import KEYS_DESTROY_CONTACT, KEYS_USE, WEBHOOKS_ADMIN, issue_token
from shared.contacts import CONTACT_DATASET, Contact
from shared.events import DatasetOutcome, DeletionKeysDestroyed, DeletionNotified, decode_event, utcnow
from shared.fakes import InMemoryContactStore
from shared.kafka import KafkaPublisher, ensure_topics
from shared.keyvault_client import KeyUnavailableError, KeyvaultClient
from shared.mongo import create_mongo_client
from shared.settings import AuthSettings, KafkaSettings, MongoSettings, SmtpSettings
from shared.smtp import send_mail
from tests.support import PARTIAL, RunningIntake, free_port, kafka_options, ready, running_intake

pytestmark = [pytest.mark.asyncio, pytest.mark.integration]

AUTH = AuthSettings(jwt_secret="notifier-test-secret-at-least-32-bytes")
FAST = (0, 0.2, 0.2, 0.2, 0.2, 0.2)


def token(*scopes: str) -> str:
    return issue_token(AUTH, subject="svc-test", scopes=scopes, ttl=timedelta(minutes=10))


class Receiver:
    """An integrator's endpoint on loopback: verifies each delivery with the official library."""

    def __init__(self, answers: list[int | tuple[int, dict[str, str]]]) -> None:
        self.answers = answers  # status codes (or code and headers) to give, in order; then 200
        self.secret: str | None = None
        self.seen: list[tuple[str, int]] = []  # (webhook-id, status answered)
        self.rejected = 0
        self.bodies: list[dict] = []
        self.raw: list[tuple[str, dict[str, str]]] = []

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.text()
        self.raw.append((body, dict(request.headers)))
        try:
            payload = Webhook(self.secret).verify(body, dict(request.headers))
        except WebhookVerificationError:
            self.rejected += 1
            return web.Response(status=400)
        answer = self.answers.pop(0) if self.answers else 200
        status, headers = answer if isinstance(answer, tuple) else (answer, {})
        self.seen.append((request.headers["webhook-id"], status))
        self.bodies.append(payload)
        return web.Response(status=status, headers=headers)

    async def __aenter__(self) -> "Receiver":
        app = web.Application()
        app.router.add_post("/hook", self.handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        self.port = free_port()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        self.url = f"http://127.0.0.1:{self.port}/hook"
        return self

    async def __aexit__(self, *_: object) -> None:
        await self._runner.cleanup()


@pytest_asyncio.fixture
async def mongo(mongo_url):
    client = create_mongo_client(MongoSettings(url=mongo_url))
    database = f"lethe_nt_{uuid.uuid4().hex[:8]}"
    yield client, database, mongo_url
    await client.drop_database(database)
    await client.close()


@pytest_asyncio.fixture
async def intake(kafka_bootstrap, mongo_url):
    """intake, for the contacts notifier reads and the rules and holds keyvault asks before destroying a key."""
    async with running_intake(kafka_bootstrap, mongo_url, AUTH) as running:
        yield running


def notifier_for(mongo, send_mail=None, contacts=None) -> handlers.Notifier:
    client, database, _ = mongo

    async def no_mail(_message) -> None:
        raise AssertionError("no mail expected")

    return handlers.Notifier(
        store=MongoWebhookStore(client, database),
        contacts=contacts or InMemoryContactStore(),
        keyvault=None,
        send_mail=send_mail or no_mail,
        sender="lethe <privacy@lethe.local>",
        clock=utcnow,
        schedule=FAST,
        mail_daily_cap=10,
    )


async def register(n: handlers.Notifier, receiver: Receiver) -> str:
    receiver.secret = new_secret()
    endpoint_id = "ep_" + uuid.uuid4().hex
    await n.store.add_endpoint(
        Endpoint(
            endpoint_id, receiver.url, ("data_deletion.completed",), (Secret(receiver.secret, utcnow()),), utcnow()
        )
    )
    return endpoint_id


def completed() -> DeletionKeysDestroyed:
    return DeletionKeysDestroyed(
        request_id=f"req-{uuid.uuid4().hex[:8]}",
        subject_id=f"user-{uuid.uuid4().hex[:8]}",
        producer="test",
        outcomes=(DatasetOutcome(dataset="profiles", store="mongo", outcome="erased"),),
        result="completed",
    )


async def run_worker(n: handlers.Notifier, sender: WebhookSender, until, limit_s: float = 20) -> None:
    async with asyncio.timeout(limit_s):
        while not until():
            await handlers.deliver_due(n, sender.send)
            await asyncio.sleep(0.05)


@pytest_asyncio.fixture
async def sender():
    sender = WebhookSender(timeout_s=5, allow_loopback=True)
    await sender.start()
    yield sender
    await sender.stop()


async def test_a_receiver_failing_three_times_gets_four_attempts_with_one_webhook_id(mongo, sender):
    n = notifier_for(mongo)
    async with Receiver([500, 503, 500]) as receiver:
        await register(n, receiver)
        await handlers.on_keys_destroyed(completed(), n)
        await handlers.on_keys_destroyed(completed(), n)  # a different event: its own id
        await run_worker(n, sender, lambda: sum(1 for _, s in receiver.seen if s == 200) == 2)
    ids = {mid for mid, _ in receiver.seen}
    assert len(ids) == 2
    assert len(receiver.seen) == 5  # 3 failures and a success for the first, one success for the second
    assert receiver.rejected == 0


async def test_replaying_an_event_schedules_nothing_new(mongo, sender):
    n = notifier_for(mongo)
    event = completed()
    async with Receiver([]) as receiver:
        endpoint_id = await register(n, receiver)
        await handlers.on_keys_destroyed(event, n)
        await handlers.on_keys_destroyed(event, n)
        await run_worker(n, sender, lambda: len(receiver.seen) >= 1)
        await asyncio.sleep(0.5)
        await handlers.deliver_due(n, sender.send)
    assert len(receiver.seen) == 1
    [delivery] = await n.store.deliveries_of(endpoint_id)
    assert delivery.status == "delivered"


async def test_an_endpoint_answering_410_is_disabled(mongo, sender):
    n = notifier_for(mongo)
    async with Receiver([410]) as receiver:
        endpoint_id = await register(n, receiver)
        await handlers.on_keys_destroyed(completed(), n)
        await run_worker(n, sender, lambda: len(receiver.seen) == 1)
    endpoint = await n.store.endpoint(endpoint_id)
    assert endpoint.status == "disabled"
    [delivery] = await n.store.deliveries_of(endpoint_id)
    assert delivery.status == "dead"


async def test_a_notifier_killed_between_attempts_resumes_with_the_same_webhook_id(mongo, sender):
    first = notifier_for(mongo)
    async with Receiver([500, 500]) as receiver:
        endpoint_id = await register(first, receiver)
        await handlers.on_keys_destroyed(completed(), first)
        await run_worker(first, sender, lambda: len(receiver.seen) == 1)
        del first  # the process dies here; only MongoDB remembers the schedule
        second = notifier_for(mongo)
        await run_worker(second, sender, lambda: any(s == 200 for _, s in receiver.seen))
    assert len({mid for mid, _ in receiver.seen}) == 1
    assert [s for _, s in receiver.seen] == [500, 500, 200]
    [delivery] = await second.store.deliveries_of(endpoint_id)
    assert [a.status_code for a in delivery.attempts] == [500, 500, 200]


async def test_redirects_are_not_followed(mongo, sender):
    n = notifier_for(mongo)
    async with Receiver([]) as target:
        target.secret = "whsec_" + "A" * 43
        app = web.Application()

        async def redirect(_: web.Request) -> web.Response:
            raise web.HTTPFound(target.url)

        app.router.add_post("/hook", redirect)
        runner = web.AppRunner(app)
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        try:
            async with Receiver([]) as receiver:
                receiver.url = f"http://127.0.0.1:{port}/hook"
                endpoint_id = await register(n, receiver)
                await handlers.on_keys_destroyed(completed(), n)
                async with asyncio.timeout(5):
                    while not (await n.store.deliveries_of(endpoint_id))[0].attempts:
                        await handlers.deliver_due(n, sender.send)
                        await asyncio.sleep(0.05)
        finally:
            await runner.cleanup()
    [delivery] = await n.store.deliveries_of(endpoint_id)
    assert delivery.attempts[0].status_code == 302
    assert delivery.status == "pending"
    assert target.seen == []


async def test_a_delivery_that_fails_for_good_alerts_the_owner_and_can_be_redelivered(mongo, sender, smtp_catcher):
    host, port, mail_dir = smtp_catcher
    from email.message import EmailMessage

    from shared.smtp import send_mail

    async def mail(message: EmailMessage) -> None:
        await send_mail(SmtpSettings(host=host, port=port), message)

    n = notifier_for(mongo, send_mail=mail)
    n.schedule = (0, 0.1)
    owner = f"ops-{uuid.uuid4().hex[:8]}@integrator.test"
    async with Receiver([500, 500]) as receiver:
        receiver.secret = new_secret()
        endpoint_id = "ep_" + uuid.uuid4().hex
        await n.store.add_endpoint(
            Endpoint(
                endpoint_id,
                receiver.url,
                ("data_deletion.completed",),
                (Secret(receiver.secret, utcnow()),),
                utcnow(),
                owner_email=owner,
            )
        )
        await handlers.on_keys_destroyed(completed(), n)
        await run_worker(n, sender, lambda: len(receiver.seen) == 2)
        [delivery] = await n.store.deliveries_of(endpoint_id)
        assert delivery.status == "dead"
        async with asyncio.timeout(10):
            while not [p for p in mail_dir.glob("*.eml") if owner in p.read_text(errors="replace")]:
                await asyncio.sleep(0.05)
        await n.store.redeliver(delivery.message_id, utcnow())
        await run_worker(n, sender, lambda: len(receiver.seen) == 3)
    assert [s for _, s in receiver.seen] == [500, 500, 200]
    assert len({mid for mid, _ in receiver.seen}) == 1
    [delivery] = await n.store.deliveries_of(endpoint_id)
    assert delivery.status == "delivered"


async def test_forbidden_addresses_are_refused_again_at_connect_time():
    strict = WebhookSender(timeout_s=5, allow_loopback=False)
    await strict.start()
    try:
        async with Receiver([]) as receiver:
            receiver.secret = "whsec_" + "A" * 43
            for url in (receiver.url, f"http://localhost:{receiver.port}/hook"):  # a literal IP, and a DNS name
                result = await strict.send(url, "{}", {})
                assert result.status_code is None, url
                assert result.error, url
        assert receiver.seen == []
    finally:
        await strict.stop()


async def test_the_service_relays_a_partial_deletion_and_mails_the_person(
    mongo, intake, kafka_bootstrap, smtp_catcher, tmp_path
):
    _, database, mongo_url = mongo
    # A group of its own from the newest offsets: what other runs left on the broker is not this test's to wait for.
    kafka = KafkaSettings(
        bootstrap_servers=kafka_bootstrap, group_prefix=f"t-{uuid.uuid4().hex[:8]}", start_from="latest"
    )
    await ensure_topics(kafka, topics.ALL_TOPICS, partitions=topics.PARTITIONS)
    host, smtp_port, mail_dir = smtp_catcher
    mongo_settings = MongoSettings(url=mongo_url, database=database)
    keyvault = create_keyvault(
        KeyvaultSettings(
            http_port=free_port(),
            kafka=kafka,
            mongo=mongo_settings,
            auth=AUTH,
            local_keyring_file=tmp_path / "keyring.json",
            **intake.reader(),
        )
    )
    await keyvault.start()
    keyvault_url = f"http://127.0.0.1:{keyvault.port}"
    settings = NotifierSettings(
        http_port=free_port(),
        kafka=kafka,
        mongo=mongo_settings,
        auth=AUTH,
        smtp=SmtpSettings(host=host, port=smtp_port),
        allow_loopback_webhooks=True,
        retry_schedule_s=FAST,
        worker_interval_s=0.05,
        keyvault_url=keyvault_url,
        keyvault_token=token(KEYS_USE, KEYS_DESTROY_CONTACT),
        **intake.reader("contacts"),
    )
    notifier = create_notifier(settings)
    await notifier.start()
    async with asyncio.timeout(60):  # joined its group: it sees what comes next
        while not await asyncio.to_thread(ready, settings.http_port):
            await asyncio.sleep(0.2)
    base = f"http://127.0.0.1:{settings.http_port}"
    subject, request_id = f"user-{uuid.uuid4().hex[:8]}", f"req-{uuid.uuid4().hex[:8]}"
    try:
        async with KeyvaultClient(keyvault_url, token=token(KEYS_USE)) as kv:
            sealed = await kv.encrypt(subject, CONTACT_DATASET, b"ada@example.test")
        await intake.contacts.put(Contact(request_id, subject, sealed))  # as intake captured it
        async with Receiver([]) as receiver, aiohttp.ClientSession() as http:
            admin = {"Authorization": f"Bearer {token(WEBHOOKS_ADMIN)}"}
            async with http.get(f"{base}/webhooks/endpoints") as r:
                assert r.status == 401
            async with http.get(
                f"{base}/webhooks/endpoints", headers={"Authorization": f"Bearer {token(KEYS_USE)}"}
            ) as r:
                assert r.status == 403
            async with http.post(
                f"{base}/webhooks/endpoints", json={"url": "http://10.0.0.7/hook"}, headers=admin
            ) as r:
                assert r.status == 422
                assert "body.url" in (await r.json())["detail"]
            async with http.post(f"{base}/webhooks/endpoints", json={"url": receiver.url}, headers=admin) as r:
                assert r.status == 201
                registered = await r.json()
            # Rotate the secret: for the overlap, deliveries carry signatures by the old and the new one.
            async with http.post(
                f"{base}/webhooks/endpoints/{registered['id']}/rotate_secret", json={"overlap_hours": 1}, headers=admin
            ) as r:
                assert r.status == 200
                rotated = (await r.json())["secret"]
            receiver.secret = rotated
            old_secret = registered["secret"]

            reader = AIOKafkaConsumer(
                topics.DELETION_NOTIFIED, **kafka_options(kafka.bootstrap_servers), auto_offset_reset="latest"
            )
            await reader.start()
            await asyncio.sleep(1)
            event = DeletionKeysDestroyed(
                request_id=request_id,
                subject_id=subject,
                producer="test",
                result="partial",
                outcomes=PARTIAL,
            )
            publisher = KafkaPublisher(kafka, client_id="test")
            await publisher.start()
            await publisher.publish(event)
            await publisher.stop()
            try:
                async with asyncio.timeout(60):
                    async for record in reader:
                        notified = decode_event(record.topic, record.value)
                        # Another notifier on the broker, without the contact, answers no_contact: not ours.
                        if notified.request_id == request_id and notified.mail != "no_contact":
                            break
            finally:
                await reader.stop()
            # The service's group may also be catching up on older events: look for this request's delivery.
            async with asyncio.timeout(20):
                while not (ours := [b for b in receiver.bodies if b["data"]["request_id"] == request_id]):
                    await asyncio.sleep(0.05)
            # The receiver has the body before the notifier has its 200 and records the delivery as delivered.
            async with asyncio.timeout(20):
                while True:
                    async with http.get(
                        f"{base}/webhooks/endpoints/{registered['id']}/deliveries",
                        params={"limit": "100"},
                        headers=admin,
                    ) as r:
                        [delivery] = [d for d in (await r.json())["items"] if d["request_id"] == request_id]
                    if delivery["status"] != "pending":
                        break
                    await asyncio.sleep(0.05)

        assert isinstance(notified, DeletionNotified)
        assert notified.result == "partial"
        assert notified.email_sent is True
        assert [b["type"] for b in ours] == ["data_deletion.partial"]
        assert receiver.rejected == 0  # verified with the new secret
        body, headers = next((b, h) for b, h in receiver.raw if request_id in b)
        assert Webhook(old_secret).verify(body, headers)  # and the old one still verifies during the overlap
        assert len({k.lower(): v for k, v in headers.items()}["webhook-signature"].split(" ")) == 2
        assert delivery["status"] == "delivered"
        assert delivery["last_response_code"] == 200
        mails = [p for p in mail_dir.glob("*.eml") if request_id in p.read_text(errors="replace")]
        [mail] = [email.message_from_bytes(p.read_bytes(), policy=email.policy.default) for p in mails]
        assert mail["To"] == "ada@example.test"
        text = mail.get_body(preferencelist=("plain",)).get_content()
        assert "invoices: legal obligation (HGB §257)" in text
        # The address's key was shredded once the mail was accepted: the stored copy is now unreadable.
        async with KeyvaultClient(keyvault_url, token=token(KEYS_USE)) as kv:
            with pytest.raises(Exception, match="destroyed"):
                await kv.decrypt(subject, CONTACT_DATASET, sealed)
    finally:
        await notifier.stop()
        await keyvault.stop()


async def test_a_crash_between_recording_a_delivery_and_listing_it_as_pending_is_repaired_on_replay(mongo, sender):
    """The chaos run found this: FerretDB stopped after the delivery was written and before the pending ledger
    was, so the re-consumed event found the delivery and scheduled nothing, and the webhook was never sent."""
    n = notifier_for(mongo)
    event = completed()
    client, database, _ = mongo
    async with Receiver([]) as receiver:
        await register(n, receiver)
        await handlers.on_keys_destroyed(event, n)
        await client[database]["notifier_pending"].delete_many({})  # as if the second write never happened
        await handlers.on_keys_destroyed(event, n)  # the event, consumed again after the crash
        await run_worker(n, sender, lambda: len(receiver.seen) == 1)
        await asyncio.sleep(0.3)
        await handlers.deliver_due(n, sender.send)
    assert len(receiver.seen) == 1
    assert await client[database]["notifier_pending"].count_documents({}) == 0


async def test_a_notifier_killed_after_mailing_the_person_does_not_mail_them_again(
    mongo, intake, kafka_bootstrap, tmp_path
):
    """The mail was accepted and recorded on the contact; the process died before the address's key was destroyed
    and the notice saved. The event, consumed again, must not mail the person a second time, and must still
    destroy the key."""
    _, database, mongo_url = mongo
    keyvault = create_keyvault(
        KeyvaultSettings(
            http_port=free_port(),
            kafka=KafkaSettings(bootstrap_servers=kafka_bootstrap),
            mongo=MongoSettings(url=mongo_url, database=database),
            auth=AUTH,
            local_keyring_file=tmp_path / "keyring.json",
            **intake.reader(),
        )
    )
    await keyvault.start()
    event = completed()
    try:
        async with KeyvaultClient(
            f"http://127.0.0.1:{keyvault.port}", token=token(KEYS_USE, KEYS_DESTROY_CONTACT)
        ) as kv:
            sealed = await kv.encrypt(event.subject_id, CONTACT_DATASET, b"ada@example.test")
            contacts = InMemoryContactStore()
            await contacts.put(Contact(event.request_id, event.subject_id, sealed))
            n = notifier_for(mongo, contacts=contacts)  # its send_mail fails the test if it is called
            await n.store.mark_mailed(event.request_id, utcnow())  # the mail went out, then the process died
            n.keyvault = kv
            [notified] = await handlers.on_keys_destroyed(event, n)
            assert isinstance(notified, DeletionNotified)
            assert notified.email_sent is True
            with pytest.raises(Exception, match="destroyed"):
                await kv.decrypt(event.subject_id, CONTACT_DATASET, sealed)
    finally:
        await keyvault.stop()


# Retry-After: what a receiver asks for cannot break the schedule.


@pytest.mark.parametrize("retry_after", ["1e12", "inf", "nan", "-1", "Fri, 31 Dec 9999 23:59:59 GMT"])
async def test_a_receiver_asking_for_an_absurd_retry_after_is_tried_again_within_the_schedule(
    mongo, sender, retry_after
):
    n = notifier_for(mongo)
    async with Receiver([(503, {"Retry-After": retry_after})]) as receiver:
        endpoint_id = await register(n, receiver)
        await handlers.on_keys_destroyed(completed(), n)
        await run_worker(n, sender, lambda: len(receiver.seen) == 2, limit_s=10)
    [delivery] = await n.store.deliveries_of(endpoint_id)
    assert [a.status_code for a in delivery.attempts] == [503, 200]
    assert delivery.status == "delivered"
    gap = delivery.attempts[1].at - delivery.attempts[0].at
    assert gap <= timedelta(seconds=5)  # FAST's longest step is 0.2 s


# The person's notice: refusals, the daily cap, and the deferred-mail job, on the real stack.


async def records_on(bootstrap: str, topic: str) -> list:
    """Every record a topic holds now, from the beginning of each partition."""
    from aiokafka import TopicPartition

    reader = AIOKafkaConsumer(**kafka_options(bootstrap), enable_auto_commit=False)
    await reader.start()
    try:
        partitions = [TopicPartition(topic, p) for p in range(topics.PARTITIONS)]
        reader.assign(partitions)
        await reader.seek_to_beginning(*partitions)
        ends = await reader.end_offsets(partitions)
        records = []
        async with asyncio.timeout(30):
            while [tp for tp in partitions if await reader.position(tp) < ends[tp]]:
                for batch in (await reader.getmany(timeout_ms=500)).values():
                    records += batch
        return records
    finally:
        await reader.stop()


def mentions(record, needle: bytes) -> bool:
    return needle in (record.value or b"") or any(needle in (value or b"") for _, value in record.headers or ())


class Stack:
    """keyvault and notifier as services, with a consumer group of their own that starts at the end of the log."""

    def __init__(
        self, mongo, intake: RunningIntake, kafka_bootstrap: str, smtp_catcher, tmp_path, **notifier_settings: object
    ) -> None:
        client, self.database, mongo_url = mongo
        self.client, self.intake = client, intake
        self.kafka = KafkaSettings(
            bootstrap_servers=kafka_bootstrap, group_prefix=f"nt-{uuid.uuid4().hex[:8]}", start_from="latest"
        )
        self.mongo_settings = MongoSettings(url=mongo_url, database=self.database)
        host, port, self.mail_dir = smtp_catcher
        self.keyvault = create_keyvault(
            KeyvaultSettings(
                http_port=free_port(),
                kafka=self.kafka,
                mongo=self.mongo_settings,
                auth=AUTH,
                local_keyring_file=tmp_path / "keyring.json",
                **intake.reader(),
            )
        )
        self.notifier_settings = notifier_settings | {"smtp": SmtpSettings(host=host, port=port)}
        self.notifier = None

    async def __aenter__(self) -> "Stack":
        await ensure_topics(self.kafka, topics.ALL_TOPICS, partitions=topics.PARTITIONS)
        await self.keyvault.start()
        self.keyvault_url = f"http://127.0.0.1:{self.keyvault.port}"
        settings = NotifierSettings(
            http_port=free_port(),
            kafka=self.kafka,
            mongo=self.mongo_settings,
            auth=AUTH,
            allow_loopback_webhooks=True,
            retry_schedule_s=FAST,
            worker_interval_s=0.05,
            keyvault_url=self.keyvault_url,
            keyvault_token=token(KEYS_USE, KEYS_DESTROY_CONTACT),
            **self.intake.reader("contacts"),
            **self.notifier_settings,
        )
        self.notifier = create_notifier(settings)
        await self.notifier.start()
        self.base = f"http://127.0.0.1:{settings.http_port}"
        async with aiohttp.ClientSession() as http, asyncio.timeout(60):
            while True:  # joined its group and knows its positions: it will see what is published next
                async with http.get(f"{self.base}/readyz") as r:
                    if r.status == 200:
                        break
                await asyncio.sleep(0.2)
        return self

    async def __aexit__(self, *_: object) -> None:
        if self.notifier is not None:
            await self.notifier.stop()
        await self.keyvault.stop()

    async def person(self, address: str) -> tuple[DeletionKeysDestroyed, str]:
        """A request whose contact address is sealed in the contact store, as intake leaves it."""
        event = completed()
        async with KeyvaultClient(self.keyvault_url, token=token(KEYS_USE)) as kv:
            sealed = await kv.encrypt(event.subject_id, CONTACT_DATASET, address.encode())
        await self.intake.contacts.put(Contact(event.request_id, event.subject_id, sealed))
        return event, sealed

    async def readable(self, event: DeletionKeysDestroyed, sealed: str) -> bool:
        async with KeyvaultClient(self.keyvault_url, token=token(KEYS_USE)) as kv:
            try:
                await kv.decrypt(event.subject_id, CONTACT_DATASET, sealed)
            except KeyUnavailableError:
                return False
            return True

    async def publish(self, event: DeletionKeysDestroyed) -> None:
        publisher = KafkaPublisher(self.kafka, client_id="test")
        await publisher.start()
        await publisher.publish(event)
        await publisher.stop()

    def mails_to(self, address: str) -> list:
        found = [p for p in self.mail_dir.glob("*.eml") if address in p.read_text(errors="replace")]
        return [email.message_from_bytes(p.read_bytes(), policy=email.policy.default) for p in found]


async def notified_events(reader: AIOKafkaConsumer, request_id: str, count: int) -> list[DeletionNotified]:
    """The next ``count`` DeletionNotified of our notifier for the request.

    Any other notifier on the broker (another test's, another run's) consumes the event too and, without the
    contact in its database, answers ``no_contact``: those are not ours.
    """
    found: list[DeletionNotified] = []
    async with asyncio.timeout(60):
        async for record in reader:
            event = decode_event(record.topic, record.value)
            if event.request_id == request_id and getattr(event, "mail", None) != "no_contact":
                assert isinstance(event, DeletionNotified)
                found.append(event)
                if len(found) == count:
                    return found
    return found


async def notified_reader(bootstrap: str) -> AIOKafkaConsumer:
    reader = AIOKafkaConsumer(topics.DELETION_NOTIFIED, **kafka_options(bootstrap), auto_offset_reset="latest")
    await reader.start()
    async with asyncio.timeout(30):
        while not reader.assignment():
            await asyncio.sleep(0.1)
    for tp in reader.assignment():
        await reader.position(tp)  # pin "latest" now, before anything is published
    return reader


async def test_an_smtp_refusal_leaves_no_address_in_logs_or_kafka_and_the_request_final_with_the_mail_failed(
    mongo, intake, kafka_bootstrap, smtp_catcher, tmp_path, caplog
):
    address = f"ada-{uuid.uuid4().hex[:8]}@refused.test"  # the catcher answers 550, naming the address
    with capture_logs() as logs:
        async with Stack(mongo, intake, kafka_bootstrap, smtp_catcher, tmp_path) as stack:
            event, sealed = await stack.person(address)
            reader = await notified_reader(kafka_bootstrap)
            try:
                await stack.publish(event)
                [notified] = await notified_events(reader, event.request_id, 1)
            finally:
                await reader.stop()
            async with aiohttp.ClientSession() as http:
                admin = {"Authorization": f"Bearer {token(WEBHOOKS_ADMIN)}"}
                async with http.get(f"{stack.base}/webhooks/requests/{event.request_id}", headers=admin) as r:
                    mail_status = (await r.json())["mail"]
            still_readable = await stack.readable(event, sealed)
            mailed = stack.mails_to(address)

    assert (notified.mail, notified.smtp_code, notified.email_sent) == ("failed", 550, False)
    assert (mail_status["status"], mail_status["smtp_code"]) == ("failed", 550)
    assert not still_readable  # the contact key was shredded although the mail never went out
    assert mailed == []
    needle = address.encode()
    assert [repr(e) for e in logs if address in repr(e)] == []
    assert [r.getMessage() for r in caplog.records if address in r.getMessage()] == []
    for topic in (topics.DELETION_NOTIFIED, topics.dlq(topics.DELETION_KEYS_DESTROYED)):
        assert [r.offset for r in await records_on(kafka_bootstrap, topic) if mentions(r, needle)] == [], topic
    client, database, _ = mongo
    for name in await client[database].list_collection_names():
        docs = await client[database][name].find({}).to_list(None)
        assert address not in repr(docs), name
    assert any(e.get("status") == "failed" and e.get("smtp_code") == 550 for e in logs)  # logged, without it


async def test_a_mail_over_the_daily_cap_waits_in_the_service_and_goes_out_when_the_day_allows(
    mongo, intake, kafka_bootstrap, smtp_catcher, tmp_path
):
    address = f"grace-{uuid.uuid4().hex[:8]}@example.test"
    async with Stack(
        mongo, intake, kafka_bootstrap, smtp_catcher, tmp_path, mail_daily_cap=1, mail_deferred_interval_s=0.2
    ) as stack:
        store = MongoWebhookStore(stack.client, stack.database)
        await store.count_mail(utcnow().strftime("%Y-%m-%d"))  # the day's one mail has gone to someone else
        event, sealed = await stack.person(address)
        reader = await notified_reader(kafka_bootstrap)
        try:
            await stack.publish(event)
            [first] = await notified_events(reader, event.request_id, 1)
            await asyncio.sleep(1)  # several rounds of the deferred-mail job
            assert stack.mails_to(address) == []
            assert await stack.readable(event, sealed)  # kept sealed, not shredded: it is still to be sent
            await stack.client[stack.database]["notifier_counters"].delete_many({})  # as on the next day
            [second] = await notified_events(reader, event.request_id, 1)
        finally:
            await reader.stop()
        [mail] = stack.mails_to(address)
        readable_after = await stack.readable(event, sealed)

    assert (first.mail, first.email_sent) == ("deferred", False)
    assert (second.mail, second.email_sent) == ("sent", True)
    assert first.event_id != second.event_id
    assert mail["To"] == address
    assert not readable_after


async def test_a_mail_over_the_cap_is_sent_by_the_job_the_next_day_oldest_first(
    mongo, intake, kafka_bootstrap, tmp_path, smtp_catcher
):
    host, port, mail_dir = smtp_catcher
    _, database, mongo_url = mongo
    keyvault = create_keyvault(
        KeyvaultSettings(
            http_port=free_port(),
            kafka=KafkaSettings(bootstrap_servers=kafka_bootstrap, group_prefix=f"nt-{uuid.uuid4().hex[:8]}"),
            mongo=MongoSettings(url=mongo_url, database=database),
            auth=AUTH,
            local_keyring_file=tmp_path / "keyring.json",
            **intake.reader(),
        )
    )
    await keyvault.start()
    now = [utcnow()]
    published: list = []

    async def publish(event) -> None:
        published.append(event)

    async def mail(message) -> None:
        await send_mail(SmtpSettings(host=host, port=port), message)

    try:
        async with KeyvaultClient(
            f"http://127.0.0.1:{keyvault.port}", token=token(KEYS_USE, KEYS_DESTROY_CONTACT)
        ) as kv:
            n = notifier_for(mongo, send_mail=mail)
            n.keyvault, n.mail_daily_cap, n.clock = kv, 1, lambda: now[0]
            people = []
            for i in range(3):
                event = completed()
                address = f"person{i}-{uuid.uuid4().hex[:6]}@example.test"
                sealed = await kv.encrypt(event.subject_id, CONTACT_DATASET, address.encode())
                await n.contacts.put(Contact(event.request_id, event.subject_id, sealed))
                [notified] = await handlers.on_keys_destroyed(event, n)
                people.append((event, address, sealed, notified))
                now[0] += timedelta(seconds=1)
            assert [p[3].mail for p in people] == ["sent", "deferred", "deferred"]
            assert await handlers.send_deferred(n.mail, publish) == 0  # the same day
            now[0] += timedelta(days=1)
            assert await handlers.send_deferred(n.mail, publish) == 1
            assert [e.request_id for e in published] == [people[1][0].request_id]  # the older one
            now[0] += timedelta(days=1)
            assert await handlers.send_deferred(n.mail, publish) == 1
            for event, address, sealed, _ in people:
                with pytest.raises(KeyUnavailableError):
                    await kv.decrypt(event.subject_id, CONTACT_DATASET, sealed)
                assert [p for p in mail_dir.glob("*.eml") if address in p.read_text(errors="replace")]
    finally:
        await keyvault.stop()
    assert [(e.mail, e.email_sent) for e in published] == [("sent", True), ("sent", True)]
