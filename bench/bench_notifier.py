"""Benchmark of notifier's webhook relay on the real stack: scheduling and signed delivery to a loopback receiver.

Run with `make bench`. Prints deliveries per second and the scheduling cost per event.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import time
import uuid

from aiohttp import web

from services.notifier import handlers
from services.notifier.adapters.http import WebhookSender
from services.notifier.adapters.store import MongoWebhookStore
from services.notifier.model import Endpoint, Secret
from services.notifier.signing import new_secret
from shared.events import DatasetOutcome, DeletionKeysDestroyed, utcnow
from shared.fakes import InMemoryContactStore
from shared.logging import configure_logging
from shared.mongo import create_mongo_client
from shared.settings import LogSettings, MongoSettings


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def bench(events: int, endpoints: int) -> None:
    received = 0

    async def hook(_: web.Request) -> web.Response:
        nonlocal received
        received += 1
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()

    settings = MongoSettings(database=f"lethe_bench_{uuid.uuid4().hex[:8]}")
    mongo = create_mongo_client(settings)

    async def no_mail(_: object) -> None:
        return None

    n = handlers.Notifier(
        store=MongoWebhookStore(mongo, settings.database),
        contacts=InMemoryContactStore(),  # no keyvault here, so no mail: the contacts are never read
        keyvault=None,
        send_mail=no_mail,
        sender="bench",
        clock=utcnow,
        schedule=(0, 1, 1),
        mail_daily_cap=0,
    )
    for _ in range(endpoints):
        await n.store.add_endpoint(
            Endpoint(
                "ep_" + uuid.uuid4().hex,
                f"http://127.0.0.1:{port}/hook",
                ("data_deletion.completed",),
                (Secret(new_secret(), utcnow()),),
                utcnow(),
            )
        )
    sender = WebhookSender(timeout_s=10, allow_loopback=True)
    await sender.start()
    try:
        started = time.perf_counter()
        for _ in range(events):
            await handlers.schedule_webhooks(
                DeletionKeysDestroyed(
                    request_id=uuid.uuid4().hex,
                    subject_id=uuid.uuid4().hex,
                    producer="bench",
                    outcomes=(DatasetOutcome(dataset="profiles", store="mongo", outcome="erased"),),
                    result="completed",
                ),
                n,
            )
        scheduling = time.perf_counter() - started
        total = events * endpoints
        started = time.perf_counter()
        while received < total:
            await handlers.deliver_due(n, sender.send)
        delivering = time.perf_counter() - started
    finally:
        await sender.stop()
        await runner.cleanup()
        await mongo.drop_database(settings.database)
        await mongo.close()
    print(f"schedule webhooks: {scheduling / events * 1000:7.2f} ms per event ({endpoints} endpoints each)")
    print(f"deliver (claim, sign, POST, record): {total / delivering:7.1f} deliveries/s ({total} deliveries)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=200)
    parser.add_argument("--endpoints", type=int, default=3)
    args = parser.parse_args()
    configure_logging(LogSettings(level="WARNING", format="console"), service="bench")
    asyncio.run(bench(args.events, args.endpoints))


if __name__ == "__main__":
    main()
