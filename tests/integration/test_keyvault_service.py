"""keyvault running on the real stack: keys over HTTP, crypto-shredding driven by Kafka (KEKs: test_keyvault_kek.py)."""

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiokafka import AIOKafkaConsumer

from services.keyvault.app import create_app
from services.keyvault.settings import KeyvaultSettings
from shared import topics
from shared.auth import KEYS_ADMIN, KEYS_USE, issue_token
from shared.crypto import DecryptionError
from shared.events import DatasetOutcome, DeletionKeysDestroyed, DeletionPurged, decode_event
from shared.fakes import InMemoryKeyvault
from shared.kafka import KafkaPublisher, ensure_topics
from shared.keyvault_client import KeyCacheInvalidator, KeyUnavailableError, KeyvaultClient
from shared.settings import AuthSettings, KafkaSettings, MongoSettings
from tests.support import free_port, kafka_options, running_intake

pytestmark = [pytest.mark.asyncio, pytest.mark.integration]

AUTH = AuthSettings(jwt_secret="test-secret-of-at-least-32-bytes-long")


def token(*scopes: str, subject: str = "svc-test") -> str:
    return issue_token(AUTH, subject=subject, scopes=scopes, ttl=timedelta(minutes=5))


@contextlib.asynccontextmanager
async def running_keyvault(kafka_bootstrap: str, mongo_url: str, tmp_path: Path) -> AsyncIterator[Any]:
    # A group of its own from the end of the log: what other runs left on the topics is not this test's to wait for.
    kafka = KafkaSettings(
        bootstrap_servers=kafka_bootstrap, group_prefix=f"t{uuid.uuid4().hex[:6]}", start_from="latest"
    )
    await ensure_topics(kafka, topics.ALL_TOPICS, partitions=topics.PARTITIONS)
    async with running_intake(kafka_bootstrap, mongo_url, AUTH) as intake:
        settings = KeyvaultSettings(
            http_port=free_port(),
            kafka=kafka,
            mongo=MongoSettings(url=mongo_url, database=f"lethe_kv_{uuid.uuid4().hex[:8]}"),
            auth=AUTH,
            local_keyring_file=tmp_path / "keyring.json",
            **intake.reader(),
        )
        service = create_app(settings)
        await service.start()
        yield service, f"http://127.0.0.1:{settings.http_port}", kafka
        await service.stop()


@pytest_asyncio.fixture
async def keyvault(kafka_bootstrap, mongo_url, tmp_path):
    async with running_keyvault(kafka_bootstrap, mongo_url, tmp_path) as found:
        yield found


async def test_a_subjects_data_is_unreadable_after_deletion_and_others_are_not(keyvault):
    _, url, kafka = keyvault
    alice, bob = f"alice-{uuid.uuid4().hex[:6]}", f"bob-{uuid.uuid4().hex[:6]}"
    async with KeyvaultClient(url, token=token(KEYS_USE)) as client:
        mine = [await client.encrypt(alice, ds, f"{ds} of alice".encode()) for ds in ("profiles", "invoices")]
        theirs = await client.encrypt(bob, "profiles", b"bob's profile")
        backup = list(mine)  # copies taken before the deletion, as a backup would hold them

        invalidator = KeyCacheInvalidator(client, kafka=KafkaSettings(bootstrap_servers=kafka.bootstrap_servers))
        await invalidator.start()
        invalidating = asyncio.create_task(invalidator.run())
        reader = AIOKafkaConsumer(
            topics.DELETION_KEYS_DESTROYED, **kafka_options(kafka.bootstrap_servers), auto_offset_reset="latest"
        )
        await reader.start()
        await asyncio.sleep(1)  # let the reader take its position at the end
        purged = DeletionPurged(
            request_id=f"req-{uuid.uuid4().hex[:6]}",
            subject_id=alice,
            producer="test",
            outcomes=(
                DatasetOutcome(dataset="profiles", store="mongo", outcome="erased"),
                DatasetOutcome(dataset="invoices", store="mongo", outcome="erased"),
            ),
        )
        publisher = KafkaPublisher(kafka, client_id="test")
        await publisher.start()
        await publisher.publish(purged)
        await publisher.stop()
        try:
            async with asyncio.timeout(60):
                async for record in reader:
                    event = decode_event(record.topic, record.value)
                    if event.request_id == purged.request_id:
                        break
        finally:
            await reader.stop()

        async with asyncio.timeout(10):
            while not invalidator.forgotten:  # the cache learns of the destruction from the same topic
                await asyncio.sleep(0.05)
        invalidating.cancel()
        await invalidator.stop()
        assert isinstance(event, DeletionKeysDestroyed)
        assert {k.dataset for k in event.destroyed} == {"profiles", "invoices"}
        for text, dataset in zip(backup, ("profiles", "invoices"), strict=True):
            with pytest.raises(KeyUnavailableError):
                await client.decrypt(alice, dataset, text)
        assert await client.decrypt(bob, "profiles", theirs) == b"bob's profile"


async def test_the_key_api_refuses_missing_wrong_and_underscoped_tokens(keyvault):
    _, url, _ = keyvault
    target = f"{url}/v1/keys/u1/profiles"
    forged = issue_token(
        AuthSettings(jwt_secret="another-secret-of-at-least-32-bytes"),
        subject="x",
        scopes=[KEYS_USE],
        ttl=timedelta(minutes=1),
    )
    async with aiohttp.ClientSession() as http:
        cases = {
            None: 401,
            "Bearer not-a-jwt": 401,
            f"Bearer {forged}": 401,
            f"Bearer {token('deletion:any')}": 403,
        }
        for header, status in cases.items():
            async with http.post(target, headers={"Authorization": header} if header else {}) as response:
                assert response.status == status, header
                assert response.content_type == "application/problem+json"
        async with http.post(f"{url}/v1/admin/kek/rotate", headers={"Authorization": f"Bearer {token(KEYS_USE)}"}) as r:
            assert r.status == 403
        async with http.post(f"{url}/v1/keys/u1/Bad.Name", headers={"Authorization": f"Bearer {token(KEYS_USE)}"}) as r:
            assert r.status == 422
            assert "path.dataset" in (await r.json())["detail"]
        async with http.get(
            f"{url}/v1/subjects/u1/keys", headers={"Authorization": f"Bearer {token(KEYS_ADMIN)}"}
        ) as r:
            assert r.status == 200


@pytest_asyncio.fixture(params=["fake", "keyvault"])
async def sealer(request, kafka_bootstrap, mongo_url, tmp_path):
    """The Sealer port (intake seals the contact address; notifier opens it) on both sides: the in-memory fake and
    KeyvaultClient against a running keyvault."""
    if request.param == "fake":
        yield InMemoryKeyvault()
        return
    async with (
        running_keyvault(kafka_bootstrap, mongo_url, tmp_path) as (_, url, _),
        KeyvaultClient(url, token=token(KEYS_USE, KEYS_ADMIN)) as client,
    ):
        yield client


async def test_sealer_contract_what_is_sealed_opens_only_for_its_subject_and_dataset_until_its_key_is_destroyed(
    sealer,
):
    alice, bob = f"alice-{uuid.uuid4().hex[:6]}", f"bob-{uuid.uuid4().hex[:6]}"
    address = await sealer.encrypt(alice, "contact", b"alice@example.test")
    profile = await sealer.encrypt(alice, "profiles", b"alice's profile")
    theirs = await sealer.encrypt(bob, "contact", b"bob@example.test")
    assert await sealer.decrypt(alice, "contact", address) == b"alice@example.test"
    with pytest.raises((DecryptionError, KeyUnavailableError)):
        await sealer.decrypt(bob, "contact", address)  # another subject's key does not open it

    await sealer.destroy_key(alice, "contact", request_id="req-contract")
    with pytest.raises(KeyUnavailableError):
        await sealer.decrypt(alice, "contact", address)
    await sealer.destroy_key(alice, "contact", request_id="req-contract")  # again: idempotent
    later = await sealer.encrypt(alice, "contact", b"alice@new.example")  # she comes back: a new key
    assert await sealer.decrypt(alice, "contact", later) == b"alice@new.example"
    with pytest.raises(KeyUnavailableError):
        await sealer.decrypt(alice, "contact", address)  # the old one stays shredded
    assert await sealer.decrypt(alice, "profiles", profile) == b"alice's profile"  # the subject's other dataset
    assert await sealer.decrypt(bob, "contact", theirs) == b"bob@example.test"  # another subject
