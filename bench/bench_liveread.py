"""Benchmark of live reads while the nightly purge runs: a live reader's p99 alone, then during the purge.

A fresh database holds one collection, ``usage_logs``, of ``--size`` documents spread over ``--users`` live users
(subject field ``user_id``, indexed as the purger indexes it). ``--tagged`` of them belong to subjects who asked
for deletion (``--per-subject`` records each, spread through the collection); each subject's are tagged by a request
of its own with the purger's ``MongoEraser`` (see ``tag``), so the ledger lists them with ``purge_after`` in the past.

``--readers`` concurrent loops then read one random live user's records at a time, hiding tagged records with the
``LIVE`` filter of ``shared.liveread`` (``--query``), and record every latency. Phase 1: the readers alone for
``--seconds``. Phase 2: the readers while ``nightly_purge`` deletes the tagged records, until it has finished; it
runs in a process of its own, like the purger, so that the readers measure the database rather than an event loop
shared with the purge, and with no pause between batches (``--pause``), the worst case for readers. Phase 3, a
control: the readers alone again (far from phase 1: the machine's other load moved, or the deletes left work behind).

It prints p50/p95/p99 of each phase, the purge's time and records/s, and the ratio of the p99s during and alone
against the target (a live reader's p99 rises by at most 10% while the purge runs), and writes
var/bench/liveread.json. Run with `make bench` (all benchmarks) or `make bench-liveread`; a quick check:
--size 100000 --tagged 10000 --seconds 5.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import random
import signal
import statistics
import time
import traceback
import uuid
from datetime import datetime, timedelta
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from services.purger.adapters.mongo import MongoEraser, MongoPurgeLedger, MongoPurgeProgress
from services.purger.handlers import Purger, nightly_purge
from services.purger.model import LedgerChunk
from services.purger.settings import PurgerSettings
from shared.datamap import DataMap, Dataset, MongoLocation
from shared.events import utcnow
from shared.fakes import InMemoryRetentionStore
from shared.liveread import LIVE, live
from shared.logging import configure_logging
from shared.mongo import create_mongo_client
from shared.settings import LogSettings, MongoSettings

DATASET = Dataset(
    name="usage_logs",
    store="mongo",
    mongo=MongoLocation(collection="usage_logs", subject_field="user_id"),
    mode="tag_then_purge",
)
TARGET = 1.10  # a live reader's p99 during the purge / alone
INSERT_BATCH = 5000
TAGGING_WORKERS = 4  # requests tagged at once while preparing (the setup only; not measured against the target)


def query_of(form: str, user: str) -> dict[str, Any]:
    """One live read's filter: the user's records, tagged ones hidden.

    ``merged`` (the default) adds LIVE's clause to the query's own: ``{"user_id": u, **LIVE}``. ``live`` is
    ``shared.liveread.live({"user_id": u})``, an ``$and`` of both, which SecantusDB answers by scanning the whole
    collection instead of using the index on ``user_id`` (any top-level ``$`` operator does that).
    """
    return {"user_id": user, **LIVE} if form == "merged" else live({"user_id": user})


def percentiles(values: list[float]) -> dict[str, float]:
    if len(values) < 2:
        return dict.fromkeys(("p50", "p95", "p99"), values[0] if values else 0.0)
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return {"p50": cuts[49], "p95": cuts[94], "p99": cuts[98]}


async def fill(coll: Any, args: argparse.Namespace, subjects: int) -> None:
    """``--size`` documents; the ``--tagged`` ones of the deletion subjects spread evenly through the collection,
    each subject's records far apart (as a person's logs are, over months), the rest over ``--users`` users."""
    every = args.size // args.tagged
    batch, live_docs = [], 0
    for i in range(args.size):
        if i % every == 0 and i // every < args.tagged:
            owner = f"gone-{(i // every) % subjects:06d}"
        else:
            owner, live_docs = f"user-{live_docs % args.users:06d}", live_docs + 1
        batch.append({"_id": f"log-{i:08d}", "user_id": owner, "endpoint": "/v1/search", "ip": "203.0.113.7"})
        if len(batch) == INSERT_BATCH:
            await coll.insert_many(batch, ordered=False)
            batch = []
        if (i + 1) % 200_000 == 0:
            print(f"    {i + 1:,} documents", flush=True)
    if batch:
        await coll.insert_many(batch, ordered=False)


async def tag(client: Any, db: str, args: argparse.Namespace, subjects: int, now: datetime) -> None:
    """Each deletion subject's records tagged by a request of its own, with the purger's ``MongoEraser``.

    ``--tag-with erase`` calls ``MongoEraser.erase`` as the purger does on ``deletion.requested``. Its search for
    the subject's records has a top-level ``$or`` (untagged, or tagged by this request), which SecantusDB answers by
    scanning the whole collection: seconds per request at a million documents. ``ids`` (the default) finds the
    records by the indexed subject field instead, then lists them in the ledger (``MongoPurgeLedger.add``) and tags them
    with the eraser's own step (``_tag``), which leave the same ledger chunks and tags behind.
    """
    ledger = MongoPurgeLedger(client, db, chunk_size=args.batch)
    eraser = MongoEraser(client, db, ledger=ledger)
    coll = client[db][DATASET.mongo.collection]
    todo = iter(range(subjects))

    async def one(subject: str, request_id: str) -> None:
        if args.tag_with == "erase":
            outcome = await eraser.erase(DATASET, subject, request_id=request_id, now=now, purge_after=now)
            assert outcome.outcome == "tagged" and outcome.counts.records_tagged == args.per_subject, outcome
            return
        ids = sorted([doc["_id"] async for doc in coll.find({"user_id": subject}, {"_id": 1})], key=str)
        assert len(ids) == args.per_subject, (subject, ids)
        await ledger.add(DATASET, DATASET.mongo.collection, subject, request_id, ids, now)
        await eraser._tag(coll, ids, request_id, now, now)

    async def worker() -> None:
        for n in todo:
            await one(f"gone-{n:06d}", f"req-{n:06d}")
            if (n + 1) % 2000 == 0:
                print(f"    {n + 1:,} requests", flush=True)

    await asyncio.gather(*(worker() for _ in range(TAGGING_WORKERS)))


Sample = tuple[float, float]  # (when a read started, time.monotonic(); its latency, s)


async def read_until(
    coll: Any, form: str, users: int, readers: int, stop: asyncio.Event, samples: list[Sample] | None = None
) -> list[Sample]:
    """``readers`` loops, each reading one random live user's records until ``stop``, adding to ``samples``."""
    samples = [] if samples is None else samples

    async def reader(seed: int) -> None:
        rng = random.Random(seed)
        while not stop.is_set():
            query = query_of(form, f"user-{rng.randrange(users):06d}")
            at, started = time.monotonic(), time.perf_counter()
            docs = await coll.find(query).to_list()
            samples.append((at, time.perf_counter() - started))
            assert docs, query  # every live user has records

    await asyncio.gather(*(reader(seed) for seed in range(readers)))
    return samples


def phase(samples: list[Sample], seconds: float, load: tuple[float, float] | None = None) -> dict[str, Any]:
    figures = {
        "reads": len(samples),
        "seconds": seconds,
        "reads_per_s": len(samples) / seconds if seconds > 0 else 0.0,
        "latency_s": percentiles([latency for _, latency in samples]),
    }
    if load is not None:
        figures["load_avg_1m"] = {"start": load[0], "end": load[1]}
    return figures


def summary(figures: dict[str, Any]) -> str:
    lat = figures["latency_s"]
    return (
        f"{figures['reads']:,} reads ({figures['reads_per_s']:.0f}/s), "
        f"p50/p95/p99 {lat['p50'] * 1e3:.1f}/{lat['p95'] * 1e3:.1f}/{lat['p99'] * 1e3:.1f} ms"
    )


async def readers_for(coll: Any, args: argparse.Namespace, seconds: float) -> tuple[list[Sample], float]:
    stop = asyncio.Event()
    started = time.perf_counter()
    reading = asyncio.create_task(read_until(coll, args.query, args.users, args.readers, stop))
    await asyncio.sleep(seconds)
    stop.set()
    samples = await reading
    return samples, time.perf_counter() - started


def purge_process(conn: Connection, database: str, now: datetime, batch: int, pause: float) -> None:
    """The nightly job, in a process of its own: waits for "go", then sends its figures (or the error).

    Its moments are ``time.monotonic()``, the system-wide CLOCK_MONOTONIC on Linux, which the readers' samples use
    too: the end of the last batch splits the job in two, deleting records, then reporting each request (which
    reads the request's chunks back from the ledger). That moment is also sent as soon as it comes ("deleted").
    """
    configure_logging(LogSettings(level="WARNING", format="console"), service="bench-purger")

    async def run() -> dict[str, Any]:
        client = create_mongo_client(MongoSettings(database=database))
        try:
            await client.admin.command("ping")  # connected before the clock starts
            purger = Purger(
                datamap=DataMap(datasets=(DATASET,)),
                erasers={},
                retention=InMemoryRetentionStore(),
                progress=MongoPurgeProgress(client, database),
                ledger=MongoPurgeLedger(client, database),
                clock=lambda: now + timedelta(seconds=1),
                purge_after=timedelta(0),
            )
            due, _ = await purger.ledger.count_due(purger.clock())
            conn.send("ready")
            conn.recv()
            started_at = last_chunk_at = time.monotonic()
            done = 0

            def on_chunk(_chunk: LedgerChunk, _purged: int) -> None:
                nonlocal last_chunk_at, done
                last_chunk_at, done = time.monotonic(), done + 1
                if done == due:
                    conn.send(("deleted", last_chunk_at))

            report = await nightly_purge(purger, pause_s=pause, on_chunk=on_chunk)
            ended_at = time.monotonic()
            return {
                "seconds": ended_at - started_at,
                "deleting_s": last_chunk_at - started_at,
                "reporting_s": ended_at - last_chunk_at,
                "records": report.records,
                "chunks": report.chunks,
                "requests_reported": len(report.hard_deleted),
                "started_at": started_at,
                "last_chunk_at": last_chunk_at,
                "ended_at": ended_at,
            }
        finally:
            await client.close()

    try:
        conn.send(("ok", asyncio.run(run())))
    except BaseException:
        conn.send(("error", traceback.format_exc()))
        raise


async def report_progress(samples: list[Sample], started: float, stage: list[str], every: float) -> None:
    """Every ``every`` seconds of phase 2, the readers' figures over the last ``every`` seconds."""
    while True:
        await asyncio.sleep(every)
        since = time.monotonic() - every
        recent = []
        for sample in reversed(samples):
            if sample[0] < since:
                break
            recent.append(sample)
        elapsed = time.monotonic() - started
        print(f"    {elapsed:5.0f} s ({stage[0]}), last {every:g} s: {summary(phase(recent, every))}", flush=True)


async def during_purge(
    coll: Any, args: argparse.Namespace, database: str, now: datetime
) -> tuple[list[Sample], dict[str, Any]]:
    """The readers while the purge runs (all their samples: ``main`` keeps those of the purge's moments)."""
    context = multiprocessing.get_context("spawn")
    ours, theirs = context.Pipe()
    process = context.Process(target=purge_process, args=(theirs, database, now, args.batch, args.pause))
    process.start()
    theirs.close()  # the child's end: once the child is gone, a read on ours ends (EOFError) instead of waiting
    try:
        ready = await asyncio.to_thread(ours.recv)
        assert ready == "ready", ready
        stop, samples = asyncio.Event(), list[Sample]()
        reading = asyncio.create_task(read_until(coll, args.query, args.users, args.readers, stop, samples))
        ours.send("go")
        started = time.monotonic()
        stage = ["deleting"]
        progress = asyncio.create_task(report_progress(samples, started, stage, args.progress))
        while True:
            status, result = await asyncio.to_thread(ours.recv)
            if status != "deleted":
                break
            stage[0] = "reporting"
            deleting = phase([x for x in samples if x[0] < result], result - started)
            print(
                f"    all batches deleted after {result - started:.1f} s, the readers meanwhile {summary(deleting)}; "
                "now the job reports each request",
                flush=True,
            )
        stop.set()
        progress.cancel()
        await reading
    except BaseException:
        process.terminate()  # interrupted: the job must not go on alone
        raise
    finally:
        process.join(timeout=30)
    if status != "ok":
        raise RuntimeError(f"the purge failed:\n{result}")
    return samples, result


async def main(args: argparse.Namespace) -> dict[str, Any]:
    configure_logging(LogSettings(level="WARNING", format="console"), service="bench")
    subjects = args.tagged // args.per_subject
    assert subjects * args.per_subject == args.tagged, "--tagged must be a multiple of --per-subject"
    assert args.tagged <= args.size - args.users, "every live user needs a record: --size too small"
    # SIGTERM as SIGINT: cancel, so that the database is dropped on the way out (not a million documents left behind).
    main_task = asyncio.current_task()
    assert main_task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main_task.cancel)
    settings = MongoSettings(database=f"bench_liveread_{uuid.uuid4().hex[:8]}")
    client = create_mongo_client(settings)
    db = settings.database
    coll = client[db]["usage_logs"]
    eraser = MongoEraser(client, db, ledger=MongoPurgeLedger(client, db, chunk_size=args.batch))
    print(
        f"live reads ({args.readers} readers, query {args.query}) alone and during the nightly purge of "
        f"{args.tagged:,} tagged records ({subjects:,} requests x {args.per_subject}) in {args.size:,} documents "
        f"of {args.users:,} users (database {db})",
        flush=True,
    )
    try:
        started = time.perf_counter()
        if args.index == "before":
            await client[db].create_collection("usage_logs")
            await eraser.ensure_indexes([DATASET])  # the purger's own: the subject field, in existing collections
        await fill(coll, args, subjects)
        if args.index == "after":
            await eraser.ensure_indexes([DATASET])
        fill_s = time.perf_counter() - started
        print(f"  {args.size:,} documents written in {fill_s:.1f} s (index on user_id {args.index})", flush=True)
        await MongoPurgeLedger(client, db).ensure_indexes()
        await MongoPurgeProgress(client, db).ensure_indexes()

        now = utcnow()
        started = time.perf_counter()
        await tag(client, db, args, subjects, now)
        tag_s = time.perf_counter() - started
        print(f"  {args.tagged:,} records tagged by {subjects:,} requests in {tag_s:.1f} s", flush=True)
        assert not await coll.find(query_of(args.query, "gone-000000")).to_list(), "LIVE shows tagged records"

        await readers_for(coll, args, args.warmup)  # connections opened, caches warm
        print(f"  phase 1: {args.readers} readers alone for {args.seconds:g} s", flush=True)
        load = os.getloadavg()[0]
        samples, seconds = await readers_for(coll, args, args.seconds)
        alone = phase(samples, seconds, (load, os.getloadavg()[0]))
        print(f"    {summary(alone)}", flush=True)

        print(
            f"  phase 2: {args.readers} readers during the purge (batches of {args.batch}, pause {args.pause:g} s)",
            flush=True,
        )
        load = os.getloadavg()[0]
        samples, purge = await during_purge(coll, args, db, now)
        start, split, end = purge.pop("started_at"), purge.pop("last_chunk_at"), purge.pop("ended_at")
        samples = [s for s in samples if start <= s[0] < end]
        during = phase(samples, end - start, (load, os.getloadavg()[0]))
        deleting = phase([s for s in samples if s[0] < split], split - start)
        reporting = phase([s for s in samples if s[0] >= split], end - split)
        assert purge["records"] == args.tagged and purge["requests_reported"] == subjects, purge
        left = await coll.estimated_document_count()
        assert left == args.size - args.tagged, left
        print(
            f"  the purge deleted {purge['records']:,} records in {purge['deleting_s']:.1f} s, then reported "
            f"{purge['requests_reported']:,} requests in {purge['reporting_s']:.1f} s",
            flush=True,
        )

        # A control, not part of the target: the same readers alone again. Far from phase 1, the machine's other
        # load moved between the phases, or the deletes left work behind (tombstones, checkpoints).
        print(f"  phase 3: {args.readers} readers alone again for {args.seconds:g} s", flush=True)
        load = os.getloadavg()[0]
        samples, seconds = await readers_for(coll, args, args.seconds)
        after = phase(samples, seconds, (load, os.getloadavg()[0]))
        print(f"    {summary(after)}", flush=True)
    finally:
        await client.drop_database(db)
        await client.close()
    ratio = during["latency_s"]["p99"] / alone["latency_s"]["p99"]
    return {
        "machine": f"{os.cpu_count()} cores",
        "documents": args.size,
        "users": args.users,
        "tagged_records": args.tagged,
        "requests": subjects,
        "readers": args.readers,
        "query": args.query,
        "index": args.index,
        "tag_with": args.tag_with,
        "fill_s": fill_s,
        "tag_s": tag_s,
        "alone": alone,
        "during_purge": during,
        "during_purge_deleting": deleting,
        "during_purge_reporting": reporting,
        "alone_after_purge": after,
        "purge": {
            **purge,
            "records_per_s": purge["records"] / purge["seconds"],
            "batch": args.batch,
            "pause_s": args.pause,
        },
        "p99_ratio": ratio,
        "target_ratio": TARGET,
        "meets_target": ratio <= TARGET,
    }


PHASES = {
    "alone": "alone",
    "during_purge": "during purge",
    "during_purge_deleting": "deleting",
    "during_purge_reporting": "reporting",
    "alone_after_purge": "after (ctrl)",
}


def table(result: dict[str, Any]) -> str:
    rows = [("phase", "reads", "reads/s", "p50 ms", "p95 ms", "p99 ms", "load 1m")]
    for name, label in PHASES.items():
        r = result[name]
        lat = r["latency_s"]
        load = r.get("load_avg_1m")
        rows.append(
            (
                label,
                f"{r['reads']:,}",
                f"{r['reads_per_s']:.0f}",
                *(f"{lat[p] * 1000:.1f}" for p in ("p50", "p95", "p99")),
                f"{load['start']:.1f}-{load['end']:.1f}" if load else "",
            )
        )
    lines = ["  ".join(f"{c:>12}" for c in row) for row in rows]
    p = result["purge"]
    lines.append(
        f"purge: {p['records']:,} records in {p['chunks']:,} batches (up to {p['batch']}, pause {p['pause_s']:g} s): "
        f"{p['seconds']:.1f} s, {p['records_per_s']:.0f} records/s; deleting {p['deleting_s']:.1f} s, "
        f"then reporting {p['requests_reported']:,} requests {p['reporting_s']:.1f} s"
    )
    verdict = "meets" if result["meets_target"] else "MISSES"
    lines.append(f"p99 during / alone: {result['p99_ratio']:.2f} ({verdict} the target of <= {TARGET:.2f})")
    return "\n".join(lines)


if __name__ == "__main__":
    defaults = PurgerSettings.model_fields
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=1_000_000, help="documents in the collection")
    parser.add_argument("--tagged", type=int, default=100_000, help="records tagged for deletion, then purged")
    parser.add_argument("--per-subject", type=int, default=10, help="tagged records per deletion request")
    parser.add_argument("--users", type=int, default=50_000, help="live users the other records belong to")
    parser.add_argument("--readers", type=int, default=4, help="concurrent live reader loops")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of phase 1 (readers alone)")
    parser.add_argument("--progress", type=float, default=60.0, help="seconds between progress lines in phase 2")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of reads before phase 1, not counted")
    parser.add_argument(
        "--batch",
        type=int,
        default=defaults["purge_batch_size"].default,
        help="ledger chunk size, records (default: the purger's PURGER_PURGE_BATCH_SIZE default)",
    )
    parser.add_argument(
        "--pause",
        type=float,
        default=0.0,
        help="seconds between the purge's batches; 0 runs it flat out, the worst case for readers "
        f"(the purger's PURGER_PURGE_BATCH_PAUSE_S defaults to {defaults['purge_batch_pause_s'].default})",
    )
    parser.add_argument(
        "--index",
        choices=("before", "after"),
        default="after",
        help="create the user_id index before or after the bulk insert (after: the faster)",
    )
    parser.add_argument(
        "--tag-with",
        choices=("ids", "erase"),
        default="ids",
        help="how the records are tagged: MongoEraser.erase (scans the collection on SecantusDB) or its own "
        "steps after a search by the indexed subject field (see tag())",
    )
    parser.add_argument(
        "--query",
        choices=("merged", "live"),
        default="merged",
        help='the readers\' filter: {"user_id": u, **LIVE} or live({"user_id": u}) (an $and)',
    )
    figures = asyncio.run(main(parser.parse_args()))
    out = Path("var/bench/liveread.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(figures, indent=2))
    print(table(figures))
    print(f"written to {out}")
