"""What every worker process shares: its typed context (clients built once at startup), the small
health/metrics HTTP server on its own port, signal handling, and the consume loop over one stream.

A worker's real work lives in order.py / payment.py as `handle_*` functions; this module must stay
free of business rules. Imports adapters, config, logs and web; never the api or sse packages."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import uvicorn
from prometheus_client import Counter, Gauge
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from flashsale import errors
from flashsale.adapters import beacon, pg
from flashsale.adapters.redis_pipe import PipelinedRedis
from flashsale.adapters.redis_stock import Redis, RedisStock, connect
from flashsale.adapters.redis_stream import Entry, Stream
from flashsale.config import Settings
from flashsale.logs import setup
from flashsale.web import metrics_response, problem

logger = logging.getLogger(__name__)

T = TypeVar("T")

# `group` is label-selector safe (stream names hold ':'); the chart's HPA alternative selects on it.
QUEUE_LAG = Gauge(
    "flashsale_queue_lag",
    "Entries of a stream not yet delivered to its consumer group (XINFO GROUPS lag).",
    ["stream", "group"],
)
QUEUE_PENDING = Gauge(
    "flashsale_queue_pending",
    "Entries delivered to a consumer but not yet acknowledged.",
    ["stream", "group"],
)
CLAIMED = Counter(
    "flashsale_queue_claimed_total",
    "Entries taken over from a consumer that stopped acknowledging (XAUTOCLAIM).",
    ["stream"],
)
STORE_ERRORS = Counter(
    "flashsale_worker_store_errors_total",
    "Worker steps that failed because Redis or PostgreSQL did not answer (then backed off).",
    ["worker"],
)

# Backoff while a store is down: quick first retries, then at most every 5 s.
STORE_BACKOFF_S = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0)
# How often a consumer looks for entries a dead consumer left behind.
CLAIM_EVERY_S = 5.0
# How often the lag gauges are refreshed (and streams trimmed below their oldest unacked entry).
HOUSEKEEPING_EVERY_S = 1.0


def consumer_name(settings: Settings) -> str:
    """Unique per process and stable for its life: two consumers never share a name."""
    return settings.worker.consumer or f"{socket.gethostname()}-{os.getpid()}"


@dataclass(frozen=True)
class WorkerContext:
    settings: Settings
    redis: Redis
    hot: PipelinedRedis  # batches of stream writes (redis_stream.Stream.add_many)
    stock: RedisStock
    pg: pg.PgStore
    consumer: str
    stop: asyncio.Event = field(default_factory=asyncio.Event)


async def startup(settings: Settings, *, stop: asyncio.Event | None = None) -> WorkerContext:
    redis = connect(settings.redis)
    pool = await retrying(lambda: pg.create_pool(settings.postgres), what="postgres pool")
    return WorkerContext(
        settings=settings,
        redis=redis,
        hot=PipelinedRedis(settings.redis.url, timeout_s=settings.redis.socket_timeout_s),
        stock=RedisStock(redis, api=settings.api),
        pg=pg.PgStore(pool),
        consumer=consumer_name(settings),
        stop=stop or asyncio.Event(),
    )


async def shutdown(ctx: WorkerContext) -> None:
    await ctx.pg.pool.close()
    await ctx.hot.aclose()
    await ctx.redis.aclose()


async def retrying(make: Callable[[], Awaitable[T]], *, what: str) -> T:
    attempt = 0
    while True:
        try:
            return await make()
        except errors.StoreUnavailable as e:
            delay = STORE_BACKOFF_S[min(attempt, len(STORE_BACKOFF_S) - 1)]
            logger.warning("%s unavailable (%s); retrying in %.2fs", what, e.detail, delay)
            attempt += 1
            await asyncio.sleep(delay)


def health_app(ctx: WorkerContext) -> Starlette:
    async def healthz(_: Request) -> Response:
        return JSONResponse({"status": "ok", "consumer": ctx.consumer})

    async def readyz(_: Request) -> Response:
        redis_ok = await ctx.stock.ping()
        pg_ok = await ctx.pg.ping()
        if redis_ok and pg_ok:
            return JSONResponse({"status": "ready"})
        down = [n for n, ok in (("redis", redis_ok), ("postgres", pg_ok)) if not ok]
        return problem(
            503, "not_ready", title="Not ready.", detail=f"unreachable: {', '.join(down)}"
        )

    async def metrics(_: Request) -> Response:
        return metrics_response()

    return Starlette(
        routes=[Route("/healthz", healthz), Route("/readyz", readyz), Route("/metrics", metrics)]
    )


class EmbeddedServer(uvicorn.Server):
    """uvicorn inside a process that owns its signals: SIGTERM/SIGINT go to the worker's stop event,
    not to uvicorn (which would otherwise replace the handlers and re-raise the signal on exit)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def serve_health(ctx: WorkerContext, *, host: str, port: int) -> None:
    config = uvicorn.Config(
        health_app(ctx),
        host=host,
        port=port,
        loop="none",
        lifespan="off",
        access_log=False,
        log_config=None,
    )
    server = EmbeddedServer(config)
    serve = asyncio.create_task(server.serve())
    await ctx.stop.wait()
    server.should_exit = True
    await serve


class Consumer:
    """One stream read by one consumer of its group: new entries in batches, entries abandoned by a
    dead consumer taken over every few seconds, lag published as a gauge. Each batch goes to
    `handle`, which acknowledges what it finished; what it leaves unacknowledged comes back later.
    """

    def __init__(
        self,
        ctx: WorkerContext,
        *,
        stream: str,
        group: str,
        handle: Callable[[Sequence[Entry]], Awaitable[None]],
        batch_size: Callable[[], int],
    ) -> None:
        self.ctx = ctx
        self.stream = Stream(
            ctx.redis, stream=stream, group=group, consumer=ctx.consumer, hot=ctx.hot
        )
        self.handle = handle
        self.batch_size = batch_size

    async def run(self) -> None:
        settings = self.ctx.settings.worker
        await retrying(self.stream.ensure_group, what=f"{self.stream.stream} group")
        loop = asyncio.get_running_loop()
        next_claim = 0.0
        attempt = 0
        while not self.ctx.stop.is_set():
            try:
                count = self.batch_size()
                if count <= 0:
                    await asyncio.sleep(0.01)
                    continue
                entries: list[Entry] = []
                if loop.time() >= next_claim:
                    entries = await self.stream.claim_idle(
                        min_idle_ms=settings.claim_idle_ms, count=count
                    )
                    next_claim = loop.time() + CLAIM_EVERY_S
                    if entries:
                        CLAIMED.labels(self.stream.stream).inc(len(entries))
                        logger.warning(
                            "claimed %d entries of %s left by a stopped consumer",
                            len(entries),
                            self.stream.stream,
                        )
                if not entries:
                    entries = await self.stream.read(count=count, block_ms=settings.block_ms)
                if entries:
                    await self.handle(entries)
                attempt = 0
            except errors.StoreUnavailable as e:
                STORE_ERRORS.labels(self.stream.group).inc()
                delay = STORE_BACKOFF_S[min(attempt, len(STORE_BACKOFF_S) - 1)]
                logger.warning("store unavailable (%s); backing off %.2fs", e.detail, delay)
                attempt += 1
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.ctx.stop.wait(), delay)

    async def housekeeping(self) -> None:
        """Refresh the lag gauges and trim the stream below its oldest unacknowledged entry."""
        name = self.stream.stream
        while not self.ctx.stop.is_set():
            try:
                info = await self.stream.info()
                QUEUE_LAG.labels(name, self.stream.group).set(info.lag)
                QUEUE_PENDING.labels(name, self.stream.group).set(info.pending)
                await self.stream.trim()
            except errors.StoreUnavailable as e:
                logger.debug("housekeeping of %s skipped: %s", name, e.detail)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.ctx.stop.wait(), HOUSEKEEPING_EVERY_S)


def worker_kind(settings: Settings, port: int) -> str:
    """The worker's name on the dashboard, told by the health port it serves (each kind has its
    own base port; `flashsale up` counts up from it for more processes of one kind)."""
    if port == settings.worker.order_port:
        return "order"
    return "payment" if port == settings.worker.payment_port else "worker"


def install_signal_handlers(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)


async def run_until_stopped(ctx: WorkerContext, *, port: int, tasks: list[Awaitable[None]]) -> None:
    """Run the worker's tasks and its health server until SIGTERM/SIGINT (or ctx.stop), then let the
    tasks finish what they hold: entries not acknowledged by then are redelivered elsewhere."""
    metrics_beacon = beacon.start(ctx.settings.redis, kind=worker_kind(ctx.settings, port))
    running = [asyncio.ensure_future(t) for t in tasks]
    running.append(
        asyncio.ensure_future(serve_health(ctx, host=ctx.settings.worker.host, port=port))
    )
    stopper = asyncio.ensure_future(ctx.stop.wait())
    try:
        done, _ = await asyncio.wait([*running, stopper], return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if task is not stopper and task.exception() is not None:
                logger.error("worker task failed", exc_info=task.exception())
                ctx.stop.set()
    finally:
        ctx.stop.set()
        # 10 s: enough for in-flight charges to hit their gateway timeout path; the rest is
        # redelivered.
        await asyncio.wait(running, timeout=10)
        for task in running:
            task.cancel()
        await asyncio.gather(*running, stopper, return_exceptions=True)
        await metrics_beacon.stop()


def main(amain: Callable[[Settings], Coroutine[Any, Any, None]], *, process_name: str) -> None:
    """A worker process's entry point: settings from the environment, logging, uvloop."""
    settings = Settings()
    setup(settings, process_name=process_name)
    import uvloop

    uvloop.run(amain(settings))
