"""End-to-end benchmark: deletions per second from DELETE to the integrator's webhook, and where the time goes.

The five services run as separate processes on the local stack (one instance each). ``--people`` subjects (10,000
by default) are seeded like `lethe seed` does, in bulk: records in the six MongoDB datasets (encrypted fields sealed
through keyvault), four S3 versions and markers, three Milvus vectors; the data map has 9 datasets (one exempt).

Runs, one after another, each on subjects of its own:
- fixed offered rates (1, 10, 50, 100 deletions/s by default), each for ``--seconds``;
- saturation: ``--saturation`` deletions all at once;
- the raw store limit: the same deletes issued straight at the stores, without lethe (indexed ``delete_many`` by
  subject in each collection, every S3 version with DeleteObjects, the Milvus vectors by filter).

For each run it reports throughput, p50/p95/p99 from DELETE to the first webhook, and per deletion: the MongoDB
commands each service sent, the Kafka records each published, and the CPU seconds of every process (the five
services, Kafka, the MongoDB server, SeaweedFS, Milvus, and this driver). CPU is read from /proc before and after a
run, so it includes whatever else the process did meanwhile (a few background jobs). Writes var/bench/chain.json.
Run with `make bench-chain` (or `make bench`); `--people 100000` works (seeding then takes much longer).
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
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import yaml
from prometheus_client.parser import text_string_to_metric_families
from pymilvus import MilvusClient

sys.path.insert(0, str(Path(__file__).parents[1]))

from ops.seeding import Seeder
from services.purger.adapters.postgres import child_deletes, quoted
from services.purger.adapters.s3 import list_versions
from services.purger.settings import PurgerSettings
from shared.auth import KEYS_USE
from shared.datamap import DataMap, load_datamap
from shared.keyvault_client import KeyvaultClient
from shared.mongo import create_mongo_client
from shared.s3 import s3_client
from shared.settings import MilvusSettings, MongoSettings, PostgresSettings, S3Settings
from tests.pipeline import ROOT, SERVICES, Api, Pipeline, Servers, WebhookReceiver, token

SHIPPED_DATAMAP = ROOT / "deploy" / "datamap.yaml"
STACK = ("kafka", "mongo", "postgres", "seaweedfs", "milvus")  # the servers whose CPU counts (var/run/<name>.pid)
SEED_BATCH = 250
TICK = os.sysconf("SC_CLK_TCK")


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


def own_datamap(workdir: Path, tag: str) -> tuple[DataMap, Path]:
    """The shipped data map with Milvus collections of this run's own (``<name>_<tag>``) and PostgreSQL tables in a
    schema of its own (``bench_<tag>``): Milvus Lite scans a whole collection per delete, so vectors left by earlier
    runs would make each run slower than the last, and rows left behind would grow the tables."""
    raw = yaml.safe_load(SHIPPED_DATAMAP.read_text())

    def own_table(table: str) -> str:
        return f"bench_{tag}.{table.rsplit('.', 1)[-1]}"

    for dataset in raw["datasets"]:
        if "milvus" in dataset:
            dataset["milvus"]["collection"] = f"{dataset['milvus']['collection']}_{tag}"
        if "postgres" in dataset:
            dataset["postgres"]["table"] = own_table(dataset["postgres"]["table"])
            for child in dataset["postgres"].get("cascade", []):
                child["table"] = own_table(child["table"])
    path = workdir / "datamap.yaml"
    workdir.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return load_datamap(path), path


async def drop_schemas(datamap: DataMap) -> None:
    """The run's PostgreSQL schemas (its tables), as the run's MongoDB database and Milvus collections are dropped."""
    schemas = {
        d.postgres.table.split(".")[0] for d in datamap.datasets if d.postgres is not None and "." in d.postgres.table
    }
    if schemas:
        conn = await asyncpg.connect(PostgresSettings().url.get_secret_value())
        try:
            for schema in schemas:
                await conn.execute(f"DROP SCHEMA IF EXISTS {quoted(schema)} CASCADE")
        finally:
            await conn.close()


async def seed(p: Pipeline, datamap: DataMap, subjects: list[str]) -> float:
    rng = random.Random(1)
    started = shown = time.monotonic()
    kv = KeyvaultClient(p.url("keyvault"), token=token(KEYS_USE))  # the seeder closes it
    async with Seeder(settings_of(p), datamap, kv, "lethe-local-email-lookup-key") as seeder:
        for start in range(0, len(subjects), SEED_BATCH):
            await seeder.people(subjects[start : start + SEED_BATCH], rng)
            if time.monotonic() - shown > 10:
                shown = time.monotonic()
                rate = (start + SEED_BATCH) / (shown - started)
                print(f"    seeded {start + SEED_BATCH:,}/{len(subjects):,} people ({rate:.0f}/s)", flush=True)
    took = time.monotonic() - started
    print(f"  seeded {len(subjects):,} people in {took:.0f} s", flush=True)
    return took


# --- what each process spends -------------------------------------------------------------------------------------


def _stats() -> list[list[str]]:
    """The fields after the command name of every live process's /proc/<pid>/stat: [0] state, [1] parent pid,
    [2] process group, [11] utime, [12] stime, [13] cutime, [14] cstime (in clock ticks)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                found.append((entry / "stat").read_text().rsplit(")", 1)[1].split())
            except OSError:
                continue
    return found


def _group_cpu_s(pgid: int) -> float:
    """User + system CPU seconds of every live process in a process group (a server and its children)."""
    return sum(int(f[11]) + int(f[12]) for f in _stats() if int(f[2]) == pgid) / TICK


def _process_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def _tree_cpu_s(pid: int) -> float:
    """CPU seconds of a server whose workers leave its process group (PostgreSQL's call setsid): its own, what its
    exited children spent (reaped: cutime and cstime), and its live children's."""
    own = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    children = sum(int(f[11]) + int(f[12]) for f in _stats() if int(f[1]) == pid)
    return (sum(int(own[i]) for i in (11, 12, 13, 14)) + children) / TICK


def cpu_seconds(p: Pipeline) -> dict[str, float]:
    cpu = {name: _process_cpu_s(p.procs[(name, 0)].pid) for name in SERVICES}
    for name in STACK:
        pid_file = ROOT / "var" / "run" / f"{name}.pid"
        if pid_file.exists():
            pid = int(pid_file.read_text())
            cpu[name] = _tree_cpu_s(pid) if name == "postgres" else _group_cpu_s(pid)
    cpu["driver"] = _process_cpu_s(os.getpid())
    return cpu


async def counters(p: Pipeline, http: aiohttp.ClientSession) -> dict[str, Counter[str]]:
    """Each service's MongoDB commands and published Kafka records so far, from its /metrics."""
    mongo: Counter[str] = Counter()
    kafka: Counter[str] = Counter()
    for name in SERVICES:
        async with http.get(f"{p.url(name)}/metrics") as response:
            text = await response.text()
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == "lethe_mongo_commands_total":
                    mongo[name] += int(sample.value)
                    mongo[f"{name}.{sample.labels['command']}"] += int(sample.value)
                elif sample.name == "lethe_events_published_total":
                    kafka[name] += int(sample.value)
    return {"mongo": mongo, "kafka": kafka}


async def measured(
    p: Pipeline, http: aiohttp.ClientSession, deletions: int, work: Callable[[], Awaitable[dict[str, Any]]]
) -> dict[str, Any]:
    """Run ``work``; add what it cost per deletion: CPU seconds per process, MongoDB commands and Kafka records."""
    cpu0, count0 = cpu_seconds(p), await counters(p, http)
    result = await work()
    cpu1, count1 = cpu_seconds(p), await counters(p, http)
    n = max(1, deletions)
    result["cpu_s_per_deletion"] = {k: round((cpu1[k] - cpu0.get(k, 0.0)) / n, 4) for k in cpu1}
    result["cpu_s_per_deletion_total"] = round(sum(result["cpu_s_per_deletion"].values()), 4)
    for kind in ("mongo", "kafka"):
        per = {s: round((count1[kind][s] - count0[kind][s]) / n, 2) for s in SERVICES}
        result[f"{kind}_per_deletion"] = per
        result[f"{kind}_per_deletion_total"] = round(sum(per.values()), 2)
    result["mongo_per_deletion_by_command"] = {
        k: round((v - count0["mongo"][k]) / n, 2) for k, v in sorted(count1["mongo"].items()) if "." in k
    }
    return result


# --- the runs -----------------------------------------------------------------------------------------------------


def percentiles(values: list[float]) -> dict[str, float]:
    if len(values) < 2:
        return {"p50": values[0] if values else 0.0, "p95": values[0] if values else 0.0, "p99": 0.0}
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return {"p50": cuts[49], "p95": cuts[94], "p99": cuts[98]}


async def run(api: Api, receiver: WebhookReceiver, subjects: list[str], rate: float | None) -> dict[str, Any]:
    """Offer the deletions at ``rate`` per second (None: all at once); wait for every webhook."""
    sent: dict[str, float] = {}
    started = time.monotonic()
    gate = asyncio.Semaphore(64)  # connections to intake at once, so a burst queues here, not in the kernel

    async def one(i: int, subject: str) -> None:
        if rate is not None:
            await asyncio.sleep(max(0.0, started + i / rate - time.monotonic()))
        async with gate:
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


async def raw_limit(p: Pipeline, datamap: DataMap, subjects: list[str], milvus: MilvusClient) -> dict[str, Any]:
    """The same erasure issued straight at the stores, 16 subjects at a time: per collection one indexed
    ``delete_many`` by subject, per PostgreSQL dataset one transaction deleting the child rows then the subject's,
    every S3 version with DeleteObjects, the Milvus vectors by filter."""
    settings = settings_of(p)
    client = create_mongo_client(settings.mongo)
    db = client[p.database]
    mongo_sets = [d for d in datamap.datasets if d.mongo is not None and not d.exempt]
    pg_sets = [d for d in datamap.datasets if d.postgres is not None and not d.exempt]
    pg = await asyncpg.create_pool(PostgresSettings().url.get_secret_value(), min_size=1, max_size=16)
    s3_sets = [d for d in datamap.datasets if d.s3 is not None]
    milvus_sets = [d for d in datamap.datasets if d.milvus is not None]
    records = 0
    async with s3_client(settings.s3) as s3:
        started = time.monotonic()
        gate = asyncio.Semaphore(16)

        async def one(subject: str) -> None:
            nonlocal records
            async with gate:
                for d in mongo_sets:
                    assert d.mongo is not None
                    records += (
                        await db[d.mongo.collection].delete_many({d.mongo.subject_field: subject})
                    ).deleted_count
                for d in pg_sets:
                    assert d.postgres is not None
                    loc = d.postgres
                    where = f"{quoted(loc.table)} WHERE {quoted(loc.subject_column)} = $1"
                    keys = f"SELECT {quoted(loc.primary_key)} FROM {where}"
                    async with pg.acquire() as conn, conn.transaction():
                        for statement in child_deletes(loc.cascade, keys):
                            await conn.execute(statement, subject)
                        status = await conn.execute(f"DELETE FROM {where}", subject)
                        records += int(status.rsplit(" ", 1)[-1])
                for d in s3_sets:
                    assert d.s3 is not None
                    versions = await list_versions(s3, d.s3.bucket, d.s3.prefix_for(subject))
                    if versions:
                        await s3.delete_objects(
                            Bucket=d.s3.bucket,
                            Delete={"Objects": [{"Key": v.key, "VersionId": v.version_id} for v in versions]},
                        )
                for d in milvus_sets:
                    assert d.milvus is not None
                    where = f'{d.milvus.filter_field} == "{subject}"'
                    await asyncio.to_thread(milvus.delete, d.milvus.collection, filter=where)

        await asyncio.gather(*(one(s) for s in subjects))
        took = time.monotonic() - started
    await client.close()
    await pg.close()
    return {"deletions": len(subjects), "records": records, "throughput_per_s": len(subjects) / took}


def plan(args: argparse.Namespace) -> list[tuple[str, float | None, int]]:
    """(name, offered rate or None for all at once, deletions) of every lethe run."""
    runs: list[tuple[str, float | None, int]] = [
        (f"{rate:g}/s", rate, max(args.min_deletions, round(rate * args.seconds))) for rate in args.rates
    ]
    runs.append(("saturation", None, args.saturation))
    return runs


async def main(args: argparse.Namespace) -> dict[str, Any]:
    workdir = ROOT / "var" / "bench" / f"chain-{uuid.uuid4().hex[:6]}"
    # Production's defaults where the e2e suite shortens them to test quickly: audit checkpointing, the outbox
    # relay's and the delivery worker's polling (both are woken by new work; polling only catches what was missed).
    env = {
        "LETHE_LOG_LEVEL": "WARNING",
        "AUDIT_CHECKPOINT_EVERY_ENTRIES": "100",
        "AUDIT_CHECKPOINT_EVERY_S": "300",
        "INTAKE_OUTBOX_INTERVAL_S": "1",
        "NOTIFIER_WORKER_INTERVAL_S": "0.5",
    }
    runs = plan(args)
    needed = sum(n for _, _, n in runs) + args.raw
    if needed > args.people:
        raise SystemExit(f"the runs delete {needed:,} people but only --people {args.people:,} are seeded")
    tag = uuid.uuid4().hex[:6]
    datamap, datamap_path = own_datamap(workdir, tag)
    env |= {
        f"{name.upper()}_DATAMAP_PATH": str(datamap_path)
        for name in ("intake", "purger", "keyvault", "notifier", "audit")
    }
    p = Pipeline(servers(), workdir, extra_env=env)
    people = [f"bench-{tag}-{n:06d}" for n in range(args.people)]
    # Made first, and kept: a Milvus client made later in this process often fails to connect (pymilvus 3.0).
    milvus = MilvusClient(uri=p.servers.milvus_uri)
    print(f"starting the five services (logs in {workdir})", flush=True)
    await p.start()
    results: dict[str, Any] = {}
    try:
        seeding_s = await seed(p, datamap, people)
        queue = iter(people)
        async with aiohttp.ClientSession() as http, WebhookReceiver() as receiver:
            api = Api(p, http)
            await api.register(receiver)
            for name, rate, n in runs:
                subjects = [next(queue) for _ in range(n)]
                print(f"  {name}: {n} deletions" + (f" at {rate:g}/s" if rate else " at once"), flush=True)
                results[name] = await measured(
                    p,
                    http,
                    n,
                    lambda s=subjects, r=rate: run(api, receiver, s, r),  # type: ignore[misc]
                )
            raw = [next(queue) for _ in range(args.raw)]
            print(f"  raw store limit: {len(raw)} subjects", flush=True)
            direct = await measured(p, http, len(raw), lambda: raw_limit(p, datamap, raw, milvus))
    finally:
        p.stop()
        await p.drop()  # the run's database: seeded people left behind would slow every later run
        for dataset in datamap.datasets:
            if dataset.milvus is not None:
                milvus.drop_collection(dataset.milvus.collection)
        milvus.close()
        await drop_schemas(datamap)
    within = [r["offered_per_s"] for r in results.values() if r["offered_per_s"] and r["latency_s"]["p99"] <= 2.0]
    return {
        "machine": f"{os.cpu_count()} cores",
        "people": args.people,
        "seeding_s": round(seeding_s, 1),
        "datasets_per_subject": len(datamap.datasets),
        "records_per_subject": direct["records"] / max(1, direct["deletions"]),
        "runs": results,
        "raw_store_limit": direct,
        "ratio_to_raw": results["saturation"]["throughput_per_s"] / direct["throughput_per_s"],
        "highest_rate_with_p99_within_2s": max(within, default=None),
        "peak_rss_mib": {name: round(kib / 1024, 1) for name, kib in sorted(p.peak_rss_kib.items())},
    }


def table(result: dict[str, Any]) -> str:
    runs = {**result["runs"], "raw stores": result["raw_store_limit"]}
    head = ("run", "deletions", "done/s", "p50 s", "p95 s", "p99 s", "mongo ops", "kafka recs", "cpu s")
    rows = [head]
    for name, r in runs.items():
        lat = r.get("latency_s")
        rows.append(
            (
                name,
                str(r["deletions"]),
                f"{r['throughput_per_s']:.2f}",
                *((f"{lat[k]:.2f}" for k in ("p50", "p95", "p99")) if lat else ("-", "-", "-")),
                f"{r['mongo_per_deletion_total']:.1f}",
                f"{r['kafka_per_deletion_total']:.1f}",
                f"{r['cpu_s_per_deletion_total']:.3f}",
            )
        )
    lines = ["  ".join(f"{c:>10}" for c in row) for row in rows]
    lines.append("(mongo ops, kafka recs and cpu s are per deletion; cpu s summed over every process)")
    sat = result["runs"]["saturation"]
    lines.append("per deletion at saturation, by process:")
    lines.append("  cpu s:      " + ", ".join(f"{k} {v:.3f}" for k, v in sat["cpu_s_per_deletion"].items()))
    lines.append("  mongo ops:  " + ", ".join(f"{k} {v:.1f}" for k, v in sat["mongo_per_deletion"].items()))
    lines.append("  kafka recs: " + ", ".join(f"{k} {v:.1f}" for k, v in sat["kafka_per_deletion"].items()))
    lines.append(
        f"{result['people']:,} people seeded in {result['seeding_s']:.0f} s; each: {result['datasets_per_subject']} "
        f"datasets, {result['records_per_subject']:.1f} MongoDB records, 4 S3 versions/markers, 3 vectors"
    )
    lines.append(f"lethe at saturation = {result['ratio_to_raw']:.2f} x the raw store limit")
    best = result["highest_rate_with_p99_within_2s"]
    lines.append(f"highest offered rate with p99 <= 2 s: {'none' if best is None else f'{best:g}/s'}")
    lines.append("peak RSS (MiB): " + ", ".join(f"{k} {v}" for k, v in result["peak_rss_mib"].items()))
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--people", type=int, default=10_000, help="people seeded before the runs")
    parser.add_argument(
        "--rates",
        type=lambda v: [float(x) for x in v.split(",")],
        default=[1.0, 10.0, 50.0, 100.0],
        help="fixed offered rates, deletions/s, comma-separated",
    )
    parser.add_argument("--seconds", type=float, default=20.0, help="how long each fixed rate is offered")
    parser.add_argument("--min-deletions", type=int, default=20, help="at least this many deletions per fixed rate")
    parser.add_argument("--saturation", type=int, default=1000, help="deletions offered all at once")
    parser.add_argument("--raw", type=int, default=500, help="subjects deleted straight at the stores")
    arguments = parser.parse_args()
    outcome = asyncio.run(main(arguments))
    out = ROOT / "var" / "bench" / "chain.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(outcome, indent=2))
    print(table(outcome))
    print(f"written to {out.relative_to(ROOT)}")
