"""Benchmark of keyvault on the real stack: encryptions and decryptions per second with a warm key cache,
the first (cold) key fetch, and destroy latency, both in the handler and end to end through Kafka.

Run with `make bench`. keyvault runs in this process on a free port, against the stack's Kafka and MongoDB.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import statistics
import sys
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path

from aiokafka import AIOKafkaConsumer

sys.path.insert(0, str(Path(__file__).parents[1]))


from services.keyvault import handlers
from services.keyvault.adapters.kek import LocalKeyring
from services.keyvault.adapters.store import MongoKeyStore
from services.keyvault.app import create_app
from services.keyvault.settings import KeyvaultSettings
from shared import topics
from shared.auth import KEYS_USE, RETENTION_READ, issue_token
from shared.datamap import load_datamap
from shared.events import DatasetOutcome, DeletionPurged, decode_event, utcnow
from shared.intake_client import intake_client
from shared.kafka import KafkaPublisher, ensure_topics
from shared.keyvault_client import KeyvaultClient
from shared.logging import configure_logging
from shared.mongo import create_mongo_client
from shared.settings import AuthSettings, KafkaSettings, LogSettings, MongoSettings
from tests.support import RunningIntake, running_intake


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def purged(subject: str) -> DeletionPurged:
    return DeletionPurged(
        request_id=f"bench-{uuid.uuid4().hex[:8]}",
        subject_id=subject,
        producer="bench",
        outcomes=(DatasetOutcome(dataset="profiles", store="mongo", outcome="erased"),),
    )


async def bench(n: int, subjects: int) -> None:
    auth = AuthSettings(jwt_secret="bench-secret-of-at-least-32-bytes-long!")
    kafka = KafkaSettings()
    await ensure_topics(kafka, topics.ALL_TOPICS, partitions=topics.PARTITIONS)
    # keyvault asks intake for the rules and holds in force before it destroys a key: a real intake serves them.
    async with running_intake(kafka.bootstrap_servers, MongoSettings().url.get_secret_value(), auth) as intake:
        await _bench(n, subjects, auth, kafka, intake)


async def _bench(n: int, subjects: int, auth: AuthSettings, kafka: KafkaSettings, intake: RunningIntake) -> None:
    settings = KeyvaultSettings(
        http_port=free_port(),
        kafka=kafka,
        auth=auth,
        mongo=MongoSettings(database=f"lethe_bench_{uuid.uuid4().hex[:8]}"),
        local_keyring_file=Path(tempfile.mkdtemp()) / "keyring.json",
        **intake.reader(),
    )
    service = create_app(settings)
    await service.start()
    token = issue_token(auth, subject="bench", scopes=[KEYS_USE], ttl=timedelta(hours=1))
    url = f"http://127.0.0.1:{settings.http_port}"
    try:
        async with KeyvaultClient(url, token=token) as client:
            started = time.perf_counter()
            for i in range(subjects):
                await client.encrypt(f"s{i}", "profiles", b"warm-up")
            cold = (time.perf_counter() - started) / subjects

            plaintext = b"Ada Lovelace, 12 St James's Square, London"
            started = time.perf_counter()
            sealed = [await client.encrypt(f"s{i % subjects}", "profiles", plaintext) for i in range(n)]
            encrypt_s = time.perf_counter() - started
            started = time.perf_counter()
            for i, text in enumerate(sealed):
                await client.decrypt(f"s{i % subjects}", "profiles", text)
            decrypt_s = time.perf_counter() - started

        # The handler alone, on the same store, keyring and intake as the running service.
        mongo = create_mongo_client(settings.mongo)
        retention = intake_client(intake.url, intake.token(RETENTION_READ))
        vault = handlers.Vault(
            store=MongoKeyStore(mongo, settings.mongo.database),
            kek=LocalKeyring.load_or_create(settings.local_keyring_file),
            clock=utcnow,
            retention=retention,
            datamap=load_datamap(settings.datamap_path),
        )
        handler_times = []
        for i in range(min(subjects, 200)):
            event = purged(f"s{i}")
            started = time.perf_counter()
            await handlers.destroy_keys(event, vault)
            handler_times.append(time.perf_counter() - started)
        await mongo.close()
        await retention.close()

        e2e_times = await _end_to_end(kafka, client_url=url, token=token, rounds=20)
    finally:
        await service.stop()

    print(f"first key of a subject (HTTP + create + wrap + store): {cold * 1000:7.2f} ms each ({subjects} subjects)")
    print(f"encrypt, warm cache:  {n / encrypt_s:9.0f} fields/s ({n} fields, {subjects} subjects)")
    print(f"decrypt, warm cache:  {n / decrypt_s:9.0f} fields/s")
    print(
        "destroy (handler: MongoDB, and intake for the rules and holds): "
        f"median {statistics.median(handler_times) * 1000:.2f} ms, "
        f"p95 {sorted(handler_times)[int(len(handler_times) * 0.95)] * 1000:.2f} ms ({len(handler_times)} subjects)"
    )
    print(
        f"destroy end to end (deletion.purged published -> deletion.keys_destroyed seen): "
        f"median {statistics.median(e2e_times) * 1000:.1f} ms, max {max(e2e_times) * 1000:.1f} ms "
        f"({len(e2e_times)} requests)"
    )


async def _end_to_end(kafka: KafkaSettings, *, client_url: str, token: str, rounds: int) -> list[float]:
    reader = AIOKafkaConsumer(topics.DELETION_KEYS_DESTROYED, **kafka.client_options(), auto_offset_reset="latest")
    await reader.start()
    await asyncio.sleep(1)
    publisher = KafkaPublisher(kafka, client_id="bench")
    await publisher.start()
    times = []
    try:
        async with KeyvaultClient(client_url, token=token) as client:
            for i in range(rounds):
                subject = f"e2e-{uuid.uuid4().hex[:8]}-{i}"
                await client.encrypt(subject, "profiles", b"x")
                event = purged(subject)
                started = time.perf_counter()
                await publisher.publish(event)
                async for record in reader:
                    if decode_event(record.topic, record.value).request_id == event.request_id:
                        break
                times.append(time.perf_counter() - started)
    finally:
        await publisher.stop()
        await reader.stop()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", type=int, default=50_000, help="fields to encrypt and decrypt")
    parser.add_argument("--subjects", type=int, default=500, help="distinct subjects (keys)")
    args = parser.parse_args()
    configure_logging(LogSettings(level="WARNING", format="console"), service="bench")
    asyncio.run(bench(args.n, args.subjects))


if __name__ == "__main__":
    main()
