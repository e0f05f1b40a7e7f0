"""The client other services (and ``lethe seed``) use to encrypt and decrypt personal fields through keyvault.

How keys reach a client: it asks keyvault over HTTP with a service token (scope ``keys:use``) and gets the
plaintext data key of one subject and dataset; it never sees the KEK. It caches a key for at most
``cache_ttl_s`` (keyvault says how long, never more than 5 minutes), and forgets a subject's keys as soon as
it learns of their destruction: every process that caches keys runs a :class:`KeyCacheInvalidator`, which reads
``deletion.keys_destroyed`` and ``deletion.keys_shredded``, and any 404 or 410 from keyvault evicts that key too.
So a destroyed key stops working in every running process within milliseconds of the event, and nothing is
encrypted under it afterwards.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import aiohttp
from pydantic import SecretStr

from shared.crypto import DataKey, decrypt_field, encrypt_field, key_id_of
from shared.service import Service
from shared.settings import KafkaSettings
from shared.topics import DELETION_KEYS_DESTROYED, DELETION_KEYS_SHREDDED

INVALIDATING_TOPICS = (DELETION_KEYS_DESTROYED, DELETION_KEYS_SHREDDED)

MAX_CACHE_TTL_S = 300


class KeyUnavailableError(Exception):
    """keyvault refused the key: it is disabled or destroyed (or never existed). The data cannot be read."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status


class KeyvaultError(Exception):
    """keyvault answered with an unexpected error."""


# Every way a call to keyvault can fail: its refusals, its errors, and the HTTP client's own (for callers that
# carry on without the key, and should not need to know which HTTP client is used).
KEYVAULT_FAILURES: tuple[type[Exception], ...] = (KeyUnavailableError, KeyvaultError, aiohttp.ClientError)


@dataclass
class _Cached:
    subject_id: str
    dataset: str
    key: DataKey
    expires: float


class KeyvaultClient:
    def __init__(
        self,
        base_url: str,
        *,
        token: str | Callable[[], str],
        max_cache_ttl_s: int = MAX_CACHE_TTL_S,
        session: aiohttp.ClientSession | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 0 <= max_cache_ttl_s <= MAX_CACHE_TTL_S:
            raise ValueError("a data key may be cached for at most 5 minutes")
        self._base = base_url.rstrip("/")
        self._token = token if callable(token) else (lambda: token)
        self._max_ttl = max_cache_ttl_s
        self._session = session
        self._own_session = session is None
        self._clock = clock
        self._current: dict[tuple[str, str], _Cached] = {}
        self._by_id: dict[str, _Cached] = {}

    async def __aenter__(self) -> KeyvaultClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._own_session and self._session is not None:
            await self._session.close()

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        return self._session

    async def encrypt(self, subject_id: str, dataset: str, plaintext: bytes) -> str:
        key = await self._current_key(subject_id, dataset)
        return encrypt_field(key, subject_id=subject_id, dataset=dataset, plaintext=plaintext)

    async def decrypt(self, subject_id: str, dataset: str, ciphertext: str) -> bytes:
        key = await self._key_by_id(subject_id, dataset, key_id_of(ciphertext))
        return decrypt_field(key, subject_id=subject_id, dataset=dataset, ciphertext=ciphertext)

    async def destroy_key(self, subject_id: str, dataset: str, *, request_id: str) -> None:
        """Have keyvault shred the subject's key for one dataset at once.

        Needs scope keys:destroy:contact for a contact key, keys:admin for any other."""
        path = f"/v1/keys/{quote(subject_id, safe='')}/{quote(dataset, safe='')}/destroy"
        await self._call("POST", path, json={"request_id": request_id})
        self.forget_subject(subject_id)

    def forget_subject(self, subject_id: str) -> None:
        """Drop every cached key of a subject (on ``deletion.keys_destroyed`` or ``deletion.keys_shredded``)."""
        self._current = {k: v for k, v in self._current.items() if v.subject_id != subject_id}
        self._by_id = {k: v for k, v in self._by_id.items() if v.subject_id != subject_id}

    def forget(self, subject_id: str, dataset: str) -> None:
        """Drop the cached keys of one subject and dataset (keyvault refused one of them)."""
        self._current.pop((subject_id, dataset), None)
        self._by_id = {k: v for k, v in self._by_id.items() if (v.subject_id, v.dataset) != (subject_id, dataset)}

    @property
    def cached(self) -> int:
        """How many keys are cached now (for tests and metrics)."""
        return len(self._by_id)

    async def _current_key(self, subject_id: str, dataset: str) -> DataKey:
        cached = self._current.get((subject_id, dataset))
        if cached and cached.expires > self._clock():
            return cached.key
        path = f"/v1/keys/{quote(subject_id, safe='')}/{quote(dataset, safe='')}"
        return self._remember(subject_id, dataset, await self._fetch(subject_id, dataset, "POST", path), current=True)

    async def _key_by_id(self, subject_id: str, dataset: str, key_id: str) -> DataKey:
        cached = self._by_id.get(key_id)
        if cached and cached.expires > self._clock() and (cached.subject_id, cached.dataset) == (subject_id, dataset):
            return cached.key
        path = f"/v1/keys/{quote(subject_id, safe='')}/{quote(dataset, safe='')}/{quote(key_id, safe='')}"
        return self._remember(subject_id, dataset, await self._fetch(subject_id, dataset, "GET", path), current=False)

    async def _fetch(self, subject_id: str, dataset: str, method: str, path: str) -> dict[str, Any]:
        try:
            return await self._call(method, path)
        except KeyUnavailableError:
            # Disabled or destroyed: no cached generation of this key may be used again, for reading or writing.
            self.forget(subject_id, dataset)
            raise

    def _remember(self, subject_id: str, dataset: str, body: dict[str, Any], *, current: bool) -> DataKey:
        key = DataKey(body["key_id"], base64.b64decode(body["dek"]))
        ttl = min(int(body.get("cache_ttl_s", 0)), self._max_ttl)
        if ttl > 0:
            entry = _Cached(subject_id, dataset, key, self._clock() + ttl)
            self._by_id[key.key_id] = entry
            if current:
                self._current[(subject_id, dataset)] = entry
        return key

    async def _call(self, method: str, path: str, *, json: dict[str, Any] | None = None) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {self._token()}"}
        async with self._http().request(method, self._base + path, headers=headers, json=json) as response:
            if response.status in (404, 410):
                problem = await response.json(content_type=None)
                raise KeyUnavailableError(response.status, problem.get("detail", "key unavailable"))
            if response.status != 200:
                raise KeyvaultError(f"keyvault answered {response.status}: {await response.text()}")
            body: dict[str, Any] = await response.json()
            return body


def keyvault_client(url: str, token: SecretStr | None) -> KeyvaultClient | None:
    """A client for a service configured with a keyvault token; None without one (unset, or set empty)."""
    return KeyvaultClient(url, token=token.get_secret_value()) if token else None


class KeyCacheInvalidator:
    """Makes one process's KeyvaultClient forget a subject's keys as soon as they are destroyed.

    Every process that caches keys runs one (intake and notifier wire it with :meth:`wire`): it reads
    ``deletion.keys_destroyed`` and ``deletion.keys_shredded`` without a consumer group (so every process sees
    every event, not a share of them), from the end, and never commits.
    """

    def __init__(self, client: KeyvaultClient, *, kafka: KafkaSettings) -> None:
        from aiokafka import AIOKafkaConsumer

        self._client = client
        self._consumer = AIOKafkaConsumer(
            *INVALIDATING_TOPICS, **kafka.client_options(), group_id=None, auto_offset_reset="latest"
        )
        self.forgotten = 0

    async def start(self) -> None:
        await self._consumer.start()
        # Take the position at the end now, so that no destruction published after start() is missed.
        for partition in self._consumer.assignment():
            await self._consumer.position(partition)

    async def stop(self) -> None:
        await self._consumer.stop()

    def wire(self, service: Service) -> None:
        """Run in ``service``: started with it (after its other start hooks), stopped with it, reading meanwhile."""
        service.on_start.append(self.start)
        service.on_stop.insert(0, self.stop)
        service.add_job("key_cache_invalidation", self.run)

    async def run(self) -> None:
        from shared.events import InvalidEventError, decode_event

        while True:
            # Short polls: cancelling the job (the service stopping) lands between two of them, never inside
            # aiokafka's fetcher.
            batches = await self._consumer.getmany(timeout_ms=200)
            for record in (r for batch in batches.values() for r in batch):
                try:
                    event = decode_event(record.topic, record.value)
                except InvalidEventError:
                    continue  # the keyvault consumer dead-letters it; a cache has nothing to forget
                if event.subject_id:
                    self._client.forget_subject(event.subject_id)
                    self.forgotten += 1
