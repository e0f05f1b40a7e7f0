"""lethe under faults: services SIGKILLed and restarted, Kafka restarted, MongoDB stopped, S3 frozen, poison.

Two instances of every service share the partitions. N people are deleted while each service is killed at
random moments, the broker restarts once, MongoDB is down and S3 hangs for a while. Then every request must
be final, with one webhook id per request, one key destruction, one notification entry and an intact audit
chain; a replay of every topic from the start must add nothing. `make chaos` runs it at full size
(LETHE_CHAOS_N=2000, 3 kills per service); `make test` runs a smaller one. The counts are printed.
"""

import asyncio
import os
import random
import re
import signal
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import OffsetAndMetadata

from shared import topics
from shared.auth import KEYS_USE
from shared.kafka import KafkaPublisher
from shared.keyvault_client import KeyvaultClient
from shared.mongo import create_mongo_client
from shared.settings import KafkaSettings, MongoSettings
from tests.pipeline import FINAL, ROOT, SERVICES, Api, Pipeline, Servers, WebhookReceiver, token
from tests.support import kafka_options

pytestmark = [pytest.mark.asyncio, pytest.mark.integration]

N = int(os.environ.get("LETHE_CHAOS_N", "40"))
KILLS = int(os.environ.get("LETHE_CHAOS_KILLS", "1"))  # per service
MONGO_DOWN_S = float(os.environ.get("LETHE_CHAOS_MONGO_DOWN_S", "30"))
S3_DOWN_S = float(os.environ.get("LETHE_CHAOS_S3_DOWN_S", "30"))
SEAWEEDFS_PID = ROOT / "var" / "run" / "seaweedfs.pid"  # the local stack's S3 server, frozen for a while
FAULT_EVERY_S = float(os.environ.get("LETHE_CHAOS_FAULT_EVERY_S", "4"))
POISON = b'{"this is": "not an event'
REQUEST_ID = re.compile(r"req_[0-9a-f]{32}")


def say(text: str) -> None:
    print(f"[chaos {time.strftime('%H:%M:%S')}] {text}", flush=True)


async def prepare(p: Pipeline, subjects: list[str]) -> None:
    """Each person gets a profile whose name is sealed under a data key of their own (so there is a key to shred),
    and an account with a sealed address, so the notifier mails them the final notice."""
    client = create_mongo_client(MongoSettings(url=p.servers.mongo_url))
    gate = asyncio.Semaphore(8)
    async with KeyvaultClient(p.url("keyvault"), token=token(KEYS_USE)) as kv:

        async def one(subject: str) -> tuple[dict[str, Any], dict[str, Any]]:
            async with gate:
                name = await kv.encrypt(subject, "profiles", b"X")
                address = await kv.encrypt(subject, "accounts", f"{subject}@example.test".encode())
            return {"_id": subject, "user_id": subject, "display_name": name}, {"user_id": subject, "email": address}

        profiles, accounts = zip(*await asyncio.gather(*(one(s) for s in subjects)), strict=True)
    await client[p.database]["profiles"].insert_many(list(profiles))
    await client[p.database]["accounts"].insert_many(list(accounts))
    await client.close()


def mails_per_request(mail_dir: Path, request_ids: list[str]) -> Counter[str]:
    """How many mails in the catcher name each request (one read of the mail folder)."""
    wanted = set(request_ids)
    found: Counter[str] = Counter()
    for path in mail_dir.glob("*.eml"):
        found.update(set(REQUEST_ID.findall(path.read_text(errors="replace"))) & wanted)
    return found


async def submit(api: Api, p: Pipeline, subject: str, deadline_s: float = 600) -> str:
    """DELETE as a careful client does: retried on any failure, with an Idempotency-Key, on either intake."""
    stop = time.monotonic() + deadline_s
    attempt = 0
    while True:
        url = p.url("intake", attempt % p.instances["intake"])
        attempt += 1
        try:
            async with api.http.delete(
                f"{url}/users/{subject}/data",
                headers=api.headers["deletion:any"] | {"Idempotency-Key": f"chaos-{subject}"},
                timeout=aiohttp.ClientTimeout(total=15),
            ) as r:
                if r.status in (200, 202):
                    return str((await r.json())["request_id"])
                # 5xx: a store is down; 429: slow down; 409: this key's first try is still in progress (or
                # died with an instance: its lease runs out). Each says Retry-After; anything else is a bug.
                assert r.status >= 500 or r.status in (409, 429), (r.status, await r.text())
        except (aiohttp.ClientError, TimeoutError):
            pass
        assert time.monotonic() < stop, f"intake never accepted the deletion of {subject}"
        await asyncio.sleep(min(0.2 * attempt, 2))


def fault_plan() -> list[str]:
    """SIGKILLs of each service, a Kafka restart, MongoDB stopped, and S3 frozen when it is the local stack's."""
    return [name for name in SERVICES for _ in range(KILLS)] + ["kafka", "mongo"] + (["s3"] if s3_pid() else [])


def s3_pid() -> int | None:
    try:
        pid = int(SEAWEEDFS_PID.read_text())
        os.kill(pid, 0)
        return pid
    except (OSError, ValueError):
        return None


async def freeze_s3(seconds: float) -> None:
    """SIGSTOP the S3 server's process group: connections hang rather than fail, the harder case."""
    pid = s3_pid()
    assert pid is not None
    os.killpg(pid, signal.SIGSTOP)
    try:
        await asyncio.sleep(seconds)
    finally:
        os.killpg(pid, signal.SIGCONT)


async def faults(p: Pipeline, broker: Any, mongo: Any, rng: random.Random, log: list[str]) -> None:
    plan = fault_plan()
    rng.shuffle(plan)
    for fault in plan:
        await asyncio.sleep(rng.uniform(0.5, 1.5) * FAULT_EVERY_S)
        if fault == "kafka":
            say("restarting Kafka")
            await asyncio.to_thread(broker.stop)
            await asyncio.to_thread(broker.start)
        elif fault == "mongo":
            say(f"stopping MongoDB for {MONGO_DOWN_S:.0f} s")
            await asyncio.to_thread(mongo.stop)
            await asyncio.sleep(MONGO_DOWN_S)
            await asyncio.to_thread(mongo.start)
        elif fault == "s3":
            say(f"freezing S3 (SeaweedFS, SIGSTOP) for {S3_DOWN_S:.0f} s")
            await freeze_s3(S3_DOWN_S)
        else:
            instance = rng.randrange(p.instances[fault])
            say(f"SIGKILL {fault}#{instance}")
            p.kill(fault, instance)
            await asyncio.sleep(rng.uniform(0, 2))
            await p.restart(fault, instance, timeout_s=300)
        log.append(fault)
    say("faults done")


async def all_final(api: Api, receiver: WebhookReceiver, request_ids: list[str], timeout_s: float) -> dict[str, str]:
    """Waits for every request's webhook (watching the receiver costs the stores nothing), then reads each status."""
    stop = time.monotonic() + timeout_s
    while missing := [r for r in request_ids if r not in receiver.first_arrival]:
        assert time.monotonic() < stop, f"{len(missing)} of {len(request_ids)} requests never notified"
        say(f"{len(request_ids) - len(missing)}/{len(request_ids)} notified")
        await asyncio.sleep(min(30, 2 + len(request_ids) / 100))
    statuses: dict[str, str] = {}
    pending = list(request_ids)
    while pending:  # intake folds the notification a moment after the webhook leaves
        for request_id in pending:
            statuses[request_id] = (await api.request(request_id))["status"]
        pending = [r for r in pending if statuses[r] not in FINAL]
        assert time.monotonic() < stop, f"not final: {Counter(statuses[r] for r in pending)}"
        await asyncio.sleep(1 if pending else 0)
    return statuses


async def audit_entries(api: Api) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = []
    cursor = 0
    while True:
        status, body = await api.call(
            "GET", "audit", "/audit/logs", "audit:read", params={"cursor": str(cursor), "limit": "500"}
        )
        assert status == 200, body
        entries += body["items"]
        if body["next_cursor"] is None:
            return entries
        cursor = body["next_cursor"]


async def counts(api: Api, receiver: WebhookReceiver, request_ids: list[str]) -> dict[str, Any]:
    entries = await audit_entries(api)
    mails = mails_per_request(api.p.servers.mail_dir, request_ids)
    ours = set(request_ids)
    mailed = {
        e["request_id"]
        for e in entries
        if e["type"] == topics.DELETION_NOTIFIED and e["request_id"] in ours and e["event"]["email_sent"]
    }
    per_type = Counter((e["request_id"], e["type"]) for e in entries if e["request_id"] in ours)
    ids = {r: {wid for wid, payload in receiver.received if payload["data"]["request_id"] == r} for r in request_ids}
    return {
        "requests": len(request_ids),
        "webhook deliveries received": len(receiver.received),
        "requests with exactly 1 webhook id": sum(len(ids[r]) == 1 for r in request_ids),
        "requests with exactly 1 key destruction": sum(
            per_type[(r, topics.DELETION_KEYS_DESTROYED)] == 1 for r in request_ids
        ),
        "requests with exactly 1 notified entry": sum(
            per_type[(r, topics.DELETION_NOTIFIED)] == 1 for r in request_ids
        ),
        # A person is mailed when intake could keep their address at the DELETE: with keyvault down (killed) it
        # cannot, and the deletion goes ahead without the notice (the notified event says email_sent false).
        "requests notified with a mail sent": len(mailed),
        "mails to the people": sum(mails.values()),
        "requests notified as mailed with exactly 1 mail": sum(mails[r] == 1 for r in mailed),
        "mails to requests not notified as mailed": sum(mails[r] for r in ours - mailed),
        # The purger's backup-expiry job runs at every start, the replay's restart included, and reports the
        # requests that became clean since its last run: entries due to time passing, not to the replay. They are
        # counted apart, and must stay at most one per request.
        "audit entries other than the scheduled backup expiry": sum(
            e["type"] != topics.DELETION_BACKUPS_EXPIRED for e in entries
        ),
        "requests with more than 1 backups_expired entry": sum(
            per_type[(r, topics.DELETION_BACKUPS_EXPIRED)] > 1 for r in request_ids
        ),
        "audit entries with a repeated event id": sum(n - 1 for n in Counter(e["event_id"] for e in entries).values()),
        "audit verify": (await api.audit_verify())["status"],
    }


async def reset_groups_to_earliest(bootstrap: str, prefix: str) -> list[str]:
    """What `kafka-consumer-groups --reset-offsets --to-earliest --all-topics --execute` does, for lethe's groups."""
    admin = AIOKafkaAdminClient(**kafka_options(bootstrap))
    await admin.start()
    try:
        groups = [g[0] for g in await admin.list_consumer_groups() if g[0].startswith(prefix)]
        for group in groups:
            committed = await admin.list_consumer_group_offsets(group)
            consumer = AIOKafkaConsumer(**kafka_options(bootstrap), group_id=group, enable_auto_commit=False)
            await consumer.start()
            try:
                consumer.assign(list(committed))
                earliest = await consumer.beginning_offsets(list(committed))
                await consumer.commit({tp: OffsetAndMetadata(earliest[tp], "") for tp in committed})
            finally:
                await consumer.stop()
        return groups
    finally:
        await admin.close()


async def wait_caught_up(bootstrap: str, groups: list[str], timeout_s: float, doing: str = "replay") -> None:
    """Until every group has committed up to the end of every partition it reads."""
    admin = AIOKafkaAdminClient(**kafka_options(bootstrap))
    consumer = AIOKafkaConsumer(**kafka_options(bootstrap))
    await admin.start()
    await consumer.start()
    try:
        async with asyncio.timeout(timeout_s):
            while True:
                lag = 0
                for group in groups:
                    committed = await admin.list_consumer_group_offsets(group)
                    ends = await consumer.end_offsets(list(committed))
                    lag += sum(ends[tp] - meta.offset for tp, meta in committed.items())
                if lag == 0:
                    return
                say(f"{doing}: {lag} messages still to consume")
                await asyncio.sleep(2)
    finally:
        await consumer.stop()
        await admin.close()


async def dead_letters(bootstrap: str) -> dict[str, list[dict[str, str]]]:
    consumer = AIOKafkaConsumer(**kafka_options(bootstrap), auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    try:
        parts = [TopicPartition(topics.dlq(t), n) for t in topics.EVENT_TOPICS for n in range(topics.PARTITIONS)]
        consumer.assign(parts)
        ends = await consumer.end_offsets(parts)
        found: dict[str, list[dict[str, str]]] = {t: [] for t in topics.EVENT_TOPICS}
        for tp in parts:
            while await consumer.position(tp) < ends[tp]:
                for record in (await consumer.getmany(tp, timeout_ms=2000)).get(tp, []):
                    if record.value == POISON:
                        headers = {k: v.decode() for k, v in record.headers}
                        found[headers["original_topic"]].append(headers)
        return found
    finally:
        await consumer.stop()


async def test_deletions_survive_kills_a_kafka_restart_a_mongo_outage_poison_and_a_full_replay(
    own_kafka, own_mongo, s3_endpoint, smtp_catcher, tmp_path
):
    rng = random.Random(int(os.environ.get("LETHE_CHAOS_SEED", "7")))
    servers = Servers.of(own_kafka.bootstrap, own_mongo.url, s3_endpoint, smtp_catcher)
    p = Pipeline(servers, tmp_path / "pipeline", instances=dict.fromkeys(SERVICES, 2), start_from="earliest")
    ensured = p.cli("topics", "ensure")
    assert ensured.returncode == 0, ensured.stderr
    subjects = [f"chaos-{uuid.uuid4().hex[:6]}-{n:05d}" for n in range(N)]
    say(f"{N} deletions, two instances of each service, {KILLS} SIGKILL(s) per service")
    try:
        await p.start(timeout_s=180)
        async with aiohttp.ClientSession() as http, WebhookReceiver() as receiver:
            api = Api(p, http)
            await api.register(receiver)
            await prepare(p, subjects)

            publisher = KafkaPublisher(KafkaSettings(bootstrap_servers=own_kafka.bootstrap), client_id="chaos")
            await publisher.start()
            for topic in topics.EVENT_TOPICS:
                await publisher.publish_raw(topic, POISON, key=b"poison", headers=[])
            await publisher.stop()

            # The deletions are spread over the time the faults take, so every fault meets work in flight.
            spread_s = len(fault_plan()) * FAULT_EVERY_S + MONGO_DOWN_S + (S3_DOWN_S if s3_pid() else 0)
            if not s3_pid():
                say("S3 is not the local stack's SeaweedFS: its outage is not part of this run")
            started = time.monotonic()

            async def paced(i: int, subject: str) -> str:
                await asyncio.sleep(max(0.0, started + i * spread_s / N - time.monotonic()))
                return await submit(api, p, subject)

            done_faults: list[str] = []
            fault_task = asyncio.create_task(faults(p, own_kafka, own_mongo, rng, done_faults))
            request_ids = await asyncio.gather(*(paced(i, s) for i, s in enumerate(subjects)))
            say(f"{N} deletions accepted in {time.monotonic() - started:.0f} s")
            await fault_task
            statuses = await all_final(api, receiver, request_ids, timeout_s=600 + N * 1.5)
            took = time.monotonic() - started
            say(f"all final {took:.0f} s after the first DELETE: {dict(Counter(statuses.values()))}")
            # The webhooks are all in, but the audit log (one hash chain, the slowest consumer) may still lag.
            kafka = KafkaSettings(group_prefix=p.env["LETHE_KAFKA_GROUP_PREFIX"])
            groups = [kafka.group_of(name) for name in SERVICES]
            await wait_caught_up(own_kafka.bootstrap, groups, timeout_s=300 + N, doing="catching up")
            await asyncio.sleep(3)  # late duplicates, if any, would land now
            before = await counts(api, receiver, request_ids)
            for name, value in before.items():
                say(f"  {name:42} {value}")

            dlq = await dead_letters(own_kafka.bootstrap)
            say("poison: " + ", ".join(f"{t}.dlq={len(v)}" for t, v in dlq.items()))

            p.stop()
            reset = await reset_groups_to_earliest(own_kafka.bootstrap, kafka.group_prefix + "-")
            assert sorted(reset) == sorted(groups), reset
            say(f"replaying every topic from the start for {len(groups)} consumer groups")
            p.procs.clear()
            await p.start(timeout_s=180)
            await wait_caught_up(own_kafka.bootstrap, groups, timeout_s=300 + N)
            await asyncio.sleep(5)  # the notifier's worker would deliver anything new now
            after = await counts(api, receiver, request_ids)
            say(f"after the replay: {after}")
    finally:
        p.stop()

    assert sorted(done_faults) == sorted(fault_plan())
    assert set(statuses.values()) <= FINAL
    assert before["requests with exactly 1 webhook id"] == N
    assert before["requests with exactly 1 key destruction"] == N
    assert before["requests with exactly 1 notified entry"] == N
    assert before["requests notified as mailed with exactly 1 mail"] == before["requests notified with a mail sent"] > 0
    assert before["mails to requests not notified as mailed"] == 0
    assert before["audit entries with a repeated event id"] == 0
    assert before["requests with more than 1 backups_expired entry"] == 0
    assert before["audit verify"] == "ok"
    assert receiver.rejected == 0
    assert after == before, "the replay added effects"
    for topic, letters in dlq.items():
        assert letters, f"the poison on {topic} did not reach {topic}.dlq"
        assert all(h["error"] and h["original_topic"] == topic for h in letters)
