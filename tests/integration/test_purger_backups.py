"""The purger's Backups port, one contract for the in-memory fake and BackupStore on the real MongoDB and S3."""

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
import pytest_asyncio

from services.purger.adapters.backups import BackupStore
from services.purger.adapters.memory import InMemoryBackups
from services.purger.model import Backup
from services.purger.ports import Backups
from shared.datamap import Dataset, MongoLocation
from shared.s3 import s3_client
from shared.settings import S3Settings
from tests.support import drop_bucket, scratch_database

pytestmark = [pytest.mark.asyncio, pytest.mark.integration]
T0 = datetime(2026, 5, 1, tzinfo=UTC)  # whole seconds: MongoDB keeps milliseconds
DAY = timedelta(days=1)


def mongo_dataset(name: str) -> Dataset:
    return Dataset(name=name, store="mongo", mongo=MongoLocation(collection=name, subject_field="user_id"))


@dataclass
class Bench:
    """One implementation of the port, and how a test takes a backup of some datasets (not part of the port)."""

    backups: Backups
    take: Callable[[datetime, Sequence[str]], Awaitable[Backup]]


@pytest_asyncio.fixture(params=["memory", "real"])
async def bench(request):
    if request.param == "memory":
        fake = InMemoryBackups()

        async def take_in_memory(at: datetime, datasets: Sequence[str]) -> Backup:
            return fake.take(at, datasets)

        yield Bench(fake, take_in_memory)
        return
    mongo_url, s3_endpoint = request.getfixturevalue("mongo_url"), request.getfixturevalue("s3_endpoint")
    s3 = S3Settings(endpoint_url=s3_endpoint)
    async with scratch_database(mongo_url, "lethe_pb") as (client, name):
        tag = name.removeprefix("lethe_pb_")
        store = BackupStore(client, name, s3, bucket=f"t-{tag}-backups")

        async def take(at: datetime, datasets: Sequence[str]) -> Backup:
            return await store.create([mongo_dataset(d) for d in datasets], now=at)

        yield Bench(store, take)
        async with s3_client(s3) as connection:
            await drop_bucket(connection, store.bucket)


async def test_the_live_backups_are_listed_oldest_first_with_the_datasets_each_holds(bench):
    newer = await bench.take(T0, ["profiles"])
    older = await bench.take(T0 - DAY, ["profiles", "accounts"])
    live = await bench.backups.live()
    assert [b.backup_id for b in live] == [older.backup_id, newer.backup_id]
    assert [b.created_at for b in live] == [T0 - DAY, T0]
    assert [b.datasets for b in live] == [frozenset({"profiles", "accounts"}), frozenset({"profiles"})]
    assert all(b.expired_at is None for b in live)


async def test_an_expired_backup_is_no_longer_live_and_the_others_stay(bench):
    first = await bench.take(T0 - 2 * DAY, ["profiles"])
    second = await bench.take(T0 - DAY, ["profiles"])
    await bench.backups.expire(first, now=T0)
    assert [b.backup_id for b in await bench.backups.live()] == [second.backup_id]
    await bench.backups.expire(second, now=T0)
    assert await bench.backups.live() == []
