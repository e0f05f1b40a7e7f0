"""End-to-end benchmark: deletions per second from DELETE to the integrator's webhook, and their latency.

The five services run as separate processes on the local stack (one instance each). Every subject is seeded like
`lethe seed` does: records in the six MongoDB datasets (encrypted fields sealed through keyvault), four S3
versions and markers, three Milvus vectors; the data map has 9 datasets, so each deletion touches 9 (one exempt).

Three runs: a fixed offered rate, saturation (all deletions at once), and the raw limit of the stores for the
same work (indexed deletes by _id on MongoDB and DeleteObjects on S3, issued directly, without lethe). It prints a
table, each service's peak RSS, and writes var/bench/chain.json. Run with `make bench` or `make bench-chain`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).parents[1]))

from services.purger.adapters.s3 import list_versions
from services.purger.seeding import Seeder
from services.purger.settings import PurgerSettings
from shared.auth import KEYS_USE
from shared.datamap import load_datamap
from shared.keyvault_client import KeyvaultClient
from shared.mongo import create_mongo_client
from shared.s3 import s3_client
from shared.settings import MilvusSettings, MongoSettings, S3Settings
from tests.pipeline import ROOT, Api, Pipeline, Servers, WebhookReceiver, token

DATAMAP = load_datamap(ROOT / "deploy" / "datamap.yaml")


def servers() -> Servers:
    env = os.environ
    return Servers(
        kafka=env.get("LETHE_KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"),
        mongo_url=env.get("LETHE_MONGO_URL", "mongodb://127.0.0.1:27017/"),
        s3=env.get("LETHE_S3_ENDPOINT_URL", "http://127.0.0.1:8333"),
        smtp=(env.get("LETHE_SMTP_HOST", "127.0.0.1"), int(env.get("LETHE_SMTP_PORT", "1025"))),
        mail_dir=Path(env.get("LETHE_SMTP_CATCHER_DIR", "var/mail")),
        milvus_uri=env.get("LETHE_MILVUS_URI", "http://127.0.0.1:19530"),
    )


def settings_of(p: Pipeline) -> PurgerSettings:
    return PurgerSettings(
        mongo=MongoSettings(url=p.servers.mongo_url, database=p.database),
        s3=S3Settings(endpoint_url=p.servers.s3),
        milvus=MilvusSettings(uri=p.servers.milvus_uri),
    )


async def seed(p: Pipeline, subjects: list[str]) -> None:
    rng = random.Random(1)
    started = time.monotonic()
    async with KeyvaultClient(p.url("keyvault"), token=token(KEYS_USE)) as kv:
        seeder = Seeder(settings_of(p), DATAMAP, kv, "lethe-local-email-lookup-key")
        async with seeder:
            gate = asyncio.Semaphore(4)

            async def one(subject: str) -> None:
                async with gate:
                    await seeder.person(subject, rng)

            await asyncio.gather(*(one(s) for s in subjects))
    print(f"  seeded {len(subjects)} people in {time.monotonic() - started:.1f} s", flush=True)


def percentiles(values: list[float]) -> dict[str, float]:
    if len(values) < 2:
        return {"p50": values[0] if values else 0.0, "p95": values[0] if values else 0.0, "p99": 0.0}
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return {"p50": cuts[49], "p95": cuts[94], "p99": cuts[98]}


async def run(api: Api, receiver: WebhookReceiver, subjects: list[str], rate: float | None) -> dict[str, Any]:
    """Offer the deletions at ``rate`` per second (None: all at once); wait for every webhook."""
    sent: dict[str, float] = {}
    started = time.monotonic()

    async def one(i: int, subject: str) -> None:
        if rate is not None:
            await asyncio.sleep(max(0.0, started + i / rate - time.monotonic()))
        t = time.monotonic()
        sent[await api.delete(subject)] = t

    await asyncio.gather(*(one(i, s) for i, s in enumerate(subjects)))
    async with asyncio.timeout(600 + 3 * len(subjects)):
        shown = time.monotonic()
        while waiting := [r for r in sent if r not in receiver.first_arrival]:
            if time.monotonic() - shown > 10:
                shown = time.monotonic()
                print(f"    {len(sent) - len(waiting)}/{len(sent)} webhooks in", flush=True)
            await asyncio.sleep(0.1)
    finished = max(receiver.first_arrival[r] for r in sent)
    latencies = [receiver.first_arrival[r] - t for r, t in sent.items()]
    return {
        "deletions": len(sent),
        "offered_per_s": rate,
        "throughput_per_s": len(sent) / (finished - started),
        "latency_s": percentiles(latencies),
    }


async def raw_limit(p: Pipeline, subjects: list[str]) -> dict[str, Any]:
    """The same erasure issued straight at the stores: each record by _id, each S3 version with DeleteObjects."""
    settings = settings_of(p)
    client = create_mongo_client(settings.mongo)
    db = client[p.database]
    mongo_sets = [d for d in DATAMAP.datasets if d.mongo is not None and not d.exempt]
    s3_sets = [d for d in DATAMAP.datasets if d.s3 is not None]
    ids: dict[str, list[tuple[str, list[Any]]]] = {}
    for subject in subjects:  # found beforehand: the raw figure is the deleting alone
        ids[subject] = []
        for d in mongo_sets:
            assert d.mongo is not None
            found = await db[d.mongo.collection].find({d.mongo.subject_field: subject}, {"_id": 1}).to_list()
            ids[subject].append((d.mongo.collection, [doc["_id"] for doc in found]))
    records = sum(len(v) for parts in ids.values() for _, v in parts)
    async with s3_client(settings.s3) as s3:
        started = time.monotonic()
        gate = asyncio.Semaphore(4)

        async def one(subject: str) -> None:
            async with gate:
                for collection, keys in ids[subject]:
                    for key in keys:
                        await db[collection].delete_one({"_id": key})
                for d in s3_sets:
                    assert d.s3 is not None
                    versions = await list_versions(s3, d.s3.bucket, d.s3.prefix_for(subject))
                    if versions:
                        await s3.delete_objects(
                            Bucket=d.s3.bucket,
                            Delete={"Objects": [{"Key": v.key, "VersionId": v.version_id} for v in versions]},
                        )

        await asyncio.gather(*(one(s) for s in subjects))
        took = time.monotonic() - started
    await client.close()
    return {"subjects": len(subjects), "records": records, "throughput_per_s": len(subjects) / took}


async def main(args: argparse.Namespace) -> dict[str, Any]:
    workdir = ROOT / "var" / "bench" / f"chain-{uuid.uuid4().hex[:6]}"
    p = Pipeline(servers(), workdir, extra_env={"LETHE_LOG_LEVEL": "WARNING"})
    tag = uuid.uuid4().hex[:6]
    fixed = [f"bench-{tag}-f{n:05d}" for n in range(args.fixed)]
    burst = [f"bench-{tag}-s{n:05d}" for n in range(args.saturation)]
    raw = [f"bench-{tag}-r{n:05d}" for n in range(args.saturation)]
    print(f"starting the five services (logs in {workdir})", flush=True)
    await p.start()
    try:
        await seed(p, fixed + burst + raw)
        async with aiohttp.ClientSession() as http, WebhookReceiver() as receiver:
            api = Api(p, http)
            await api.register(receiver)
            print(f"  fixed rate: {args.fixed} deletions at {args.rate}/s", flush=True)
            at_rate = await run(api, receiver, fixed, args.rate)
            print(f"  saturation: {args.saturation} deletions at once", flush=True)
            saturated = await run(api, receiver, burst, None)
        print("  raw store limit", flush=True)
        direct = await raw_limit(p, raw)
    finally:
        p.stop()
    return {
        "machine": f"{os.cpu_count()} cores",
        "datasets_per_subject": len(DATAMAP.datasets),
        "records_per_subject": direct["records"] / max(1, direct["subjects"]),
        "fixed_rate": at_rate,
        "saturation": saturated,
        "raw_store_limit": direct,
        "ratio_to_raw": saturated["throughput_per_s"] / direct["throughput_per_s"],
        "peak_rss_mib": {name: round(kib / 1024, 1) for name, kib in sorted(p.peak_rss_kib.items())},
    }


def table(result: dict[str, Any]) -> str:
    rows = [("run", "deletions", "offered/s", "done/s", "p50 s", "p95 s", "p99 s")]
    for name in ("fixed_rate", "saturation"):
        r = result[name]
        lat = r["latency_s"]
        offered = "-" if r["offered_per_s"] is None else f"{r['offered_per_s']:.1f}"
        rows.append(
            (
                name,
                str(r["deletions"]),
                offered,
                f"{r['throughput_per_s']:.2f}",
                f"{lat['p50']:.2f}",
                f"{lat['p95']:.2f}",
                f"{lat['p99']:.2f}",
            )
        )
    raw = result["raw_store_limit"]
    rows.append(("raw stores", str(raw["subjects"]), "-", f"{raw['throughput_per_s']:.2f}", "-", "-", "-"))
    lines = ["  ".join(f"{c:>10}" for c in row) for row in rows]
    lines.append(
        f"each subject: {result['datasets_per_subject']} datasets, "
        f"{result['records_per_subject']:.1f} MongoDB records, 4 S3 versions/markers, 3 vectors; "
        f"lethe at saturation = {result['ratio_to_raw']:.2f} x the raw store limit"
    )
    lines.append("peak RSS (MiB): " + ", ".join(f"{k} {v}" for k, v in result["peak_rss_mib"].items()))
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fixed", type=int, default=60, help="deletions offered at the fixed rate")
    parser.add_argument("--rate", type=float, default=1.0, help="the fixed offered rate, deletions per second")
    parser.add_argument("--saturation", type=int, default=100, help="deletions offered all at once")
    arguments = parser.parse_args()
    outcome = asyncio.run(main(arguments))
    out = ROOT / "var" / "bench" / "chain.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(outcome, indent=2))
    print(table(outcome))
    print(f"written to {out.relative_to(ROOT)}")
