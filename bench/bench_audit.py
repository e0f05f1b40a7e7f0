"""Benchmark of the audit log on the real stack: appends per second, and the time to verify a long chain.

Run with `make bench`.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from datetime import timedelta

from services.audit.adapters.log import MongoAuditLog
from services.audit.chain import chain, verify_log
from shared.events import DeletionRequested, utcnow
from shared.logging import configure_logging
from shared.mongo import create_mongo_client
from shared.settings import LogSettings, MongoSettings


def requested(i: int) -> DeletionRequested:
    now = utcnow()
    return DeletionRequested(
        request_id=f"r{i}",
        subject_id=f"u{i % 500}",
        producer="bench",
        requested_by="bench",
        deadline_at=now + timedelta(days=30),
        backups_purged_by=now + timedelta(days=90),
    )


async def bench(appends: int, chain_length: int) -> None:
    settings = MongoSettings(database=f"lethe_bench_{uuid.uuid4().hex[:8]}")
    client = create_mongo_client(settings)
    try:
        audit_log = MongoAuditLog(client, settings.database)
        started = time.perf_counter()
        for i in range(appends):
            await audit_log.append(requested(i), recorded_at=utcnow())
        append_s = time.perf_counter() - started
        started = time.perf_counter()
        for i in range(appends):
            await audit_log.append(requested(i), recorded_at=utcnow())
        replay_s = time.perf_counter() - started

        long_log = MongoAuditLog(client, settings.database + "_long")
        entries = chain((requested(i), utcnow()) for i in range(chain_length))
        await long_log.import_entries(entries)
        started = time.perf_counter()
        report = await verify_log(long_log.all_entries(), head=await long_log.head(), checkpoints=[], public_keys={})
        verify_s = time.perf_counter() - started
        assert report.ok
    finally:
        await client.drop_database(settings.database)
        await client.drop_database(settings.database + "_long")
        await client.close()
    each_ms = append_s / appends * 1000
    print(f"append (new events, one writer):   {appends / append_s:7.1f} events/s ({each_ms:.1f} ms each)")
    print(f"replay (events already logged):    {appends / replay_s:7.1f} events/s")
    print(f"verify a chain of {chain_length} entries: {verify_s:.2f} s ({chain_length / verify_s:.0f} entries/s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--appends", type=int, default=300)
    parser.add_argument("--chain", type=int, default=10_000)
    args = parser.parse_args()
    configure_logging(LogSettings(level="WARNING", format="console"), service="bench")
    asyncio.run(bench(args.appends, args.chain))


if __name__ == "__main__":
    main()
