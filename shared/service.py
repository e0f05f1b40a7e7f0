"""One lifecycle for every service: start clients, serve HTTP, consume, and stop gracefully on SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import traceback
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import structlog
from aiohttp import web
from aiokafka.errors import UnknownTopicOrPartitionError
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_delay, wait_exponential

from shared.consumer import TRANSIENT_ERRORS, KafkaConsumerLoop
from shared.kafka import Publisher
from shared.metrics import Metrics
from shared.scrub import scrub

log = structlog.get_logger(__name__)

# At start, a missing topic is worth waiting for too: the stack (or compose's `topics` job) may be creating it.
STARTUP_RETRY_ERRORS = (*TRANSIENT_ERRORS, UnknownTopicOrPartitionError)

Hook = Callable[[], Awaitable[None]]
Job = Callable[[], Coroutine[Any, Any, None]]


@dataclass
class BackgroundTasks:
    """Work a request starts and does not wait for (a mail): kept referenced, cancelled when the service stops."""

    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def start(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def cancel(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


async def _watched(name: str, job: Job) -> None:
    """A job that ends or dies says so (a job is meant to run until the service stops)."""
    try:
        await job()
        log.error("job.ended", job=name)
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        log.error("job.died", job=name, **_scrubbed(exc))


def _scrubbed(exc: Exception) -> dict[str, str]:
    """The error and its traceback with any address scrubbed (an error may quote one: never log it raw)."""
    trace = "".join(traceback.format_exception(exc))
    return {"error_type": type(exc).__name__, "error": scrub(repr(exc)), "traceback": scrub(trace)}


def every(
    interval_s: float, work: Callable[[], Awaitable[object]], *, name: str, wake: asyncio.Event | None = None
) -> Job:
    """A job that runs ``work`` now and then every ``interval_s`` (at once when ``wake`` is set meanwhile). A failed
    round is logged with the job's name and the next round tries again: whatever it works from (an outbox, a ledger,
    a deadline) still lists what is left."""

    async def run() -> None:
        while True:
            if wake is not None:
                wake.clear()  # set while ``work`` runs: the next round starts at once
            try:
                await work()
            except Exception as exc:
                if isinstance(exc, TRANSIENT_ERRORS):  # a server away: expected, no traceback
                    log.warning("job.retrying", job=name, error=scrub(repr(exc)))
                else:
                    log.error("job.failed", job=name, **_scrubbed(exc))
            if wake is None:
                await asyncio.sleep(interval_s)
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), interval_s)

    return run


@dataclass
class Service:
    """A built service: its HTTP app, its consumer (if it consumes) and the clients to start and stop."""

    name: str
    web_app: web.Application
    host: str
    port: int
    metrics: Metrics
    publisher: Publisher
    consumer: KafkaConsumerLoop | None = None
    on_start: list[Hook] = field(default_factory=list)
    on_stop: list[Hook] = field(default_factory=list)
    # Named long-running jobs (scheduled work, see add_job): started after the clients, cancelled first on stop.
    jobs: dict[str, Job] = field(default_factory=dict)
    start_timeout_s: float = 120.0
    _runner: web.AppRunner | None = None
    _consume_task: asyncio.Task[None] | None = None
    _background_tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def start(self) -> None:
        """Connect to the servers (waiting for them to come up), then serve HTTP and start consuming."""
        hooks = list(self.on_start)
        if self.consumer is not None:
            hooks.append(self.consumer.start)
        for hook in hooks:
            async for attempt in AsyncRetrying(
                retry=retry_if_exception_type(STARTUP_RETRY_ERRORS),
                wait=wait_exponential(multiplier=0.2, max=5),
                stop=stop_after_delay(self.start_timeout_s),
                reraise=True,
                before_sleep=lambda state: log.warning(
                    "service.waiting_for_dependency", error=scrub(repr(state.outcome and state.outcome.exception()))
                ),
            ):
                with attempt:
                    await hook()
        self._runner = web.AppRunner(self.web_app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port).start()
        if self.consumer is not None:
            self._consume_task = asyncio.create_task(self.consumer.run(), name=f"{self.name}-consumer")
        for name, job in self.jobs.items():
            self._background_tasks.append(asyncio.create_task(_watched(name, job), name=f"{self.name}-{name}"))
        log.info("service.started", url=f"http://{self.host}:{self.port}", jobs=sorted(self.jobs))

    def add_job(self, name: str, job: Job) -> None:
        """Register a background job by name (``every`` makes the periodic ones); its task is ``<service>-<name>``."""
        if name in self.jobs:
            raise ValueError(f"the service {self.name} already has a job named {name}")
        self.jobs[name] = job

    def add_periodic(
        self, name: str, interval_s: float, work: Callable[[], Awaitable[object]], *, wake: asyncio.Event | None = None
    ) -> None:
        """Register ``work`` as a job run every ``interval_s`` (sooner when ``wake`` is set): see :func:`every`."""
        self.add_job(name, every(interval_s, work, name=name, wake=wake))

    async def stop(self, grace_s: float = 10.0) -> None:
        """Stop consuming (finishing the message in hand), stop serving, close clients."""
        for task in self._background_tasks:
            task.cancel()
        if self._background_tasks:
            # A job that swallows its cancellation must not keep the service from stopping: it is left behind, named.
            _, stuck = await asyncio.wait(self._background_tasks, timeout=grace_s)
            for task in stuck:
                log.warning("service.job_did_not_stop", job=task.get_name())
        if self.consumer is not None:
            self.consumer.request_stop()
        if self._consume_task is not None:
            try:
                await asyncio.wait_for(self._consume_task, grace_s)
            except TimeoutError:
                # The message in hand is abandoned uncommitted; it will be consumed again after restart.
                log.warning("service.abandoned_in_flight_work")
        if self.consumer is not None:
            await self.consumer.stop()
        if self._runner is not None:
            await self._runner.cleanup()
        for hook in reversed(self.on_stop):
            await hook()
        log.info("service.stopped")

    async def run_until_signalled(self) -> None:
        """Start, then run until SIGTERM or SIGINT, or until the consumer dies; then stop."""
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await self.start()
        waiters: list[asyncio.Task[Any]] = [asyncio.create_task(stop.wait())]
        if self._consume_task is not None:
            waiters.append(self._consume_task)
        done, _ = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        crashed = self._consume_task in done and not stop.is_set()
        for waiter in waiters:
            if waiter is not self._consume_task:
                waiter.cancel()
        await self.stop()
        if crashed and self._consume_task is not None:
            # Surface the consumer's error: the process exits non-zero and its supervisor restarts it.
            self._consume_task.result()
