"""The fan-out of one SSE process: one Redis subscription in, every connected client out.

Design (per process):
- ONE pub/sub connection (sse.subscription) receives every sale's events and every order event.
  A sale message goes to that sale's hub (sse.hub), if anyone here watches the sale; else it is
  dropped before its JSON is even parsed. An order event goes to the caller's order clients.
- A hub is created by the first client of a sale (one snapshot read from Redis; later clients get
  its cached frames with no Redis round trip) and closed with the last one. Coalescing, state
  derivation, timers and frame encoding happen once per sale in the hub, never per client.
- A client (sse.clients) is a few flags and ids; its writer (sse.app) pulls the hub's current
  frames when it runs. A slow client therefore gets the latest value, never a backlog: memory per
  client is bounded whatever happens, and an order client's queue is capped.
- Heartbeats: the clients are spread over HEARTBEAT_SLICES slices, one slice ticked every
  heartbeat_s / HEARTBEAT_SLICES, so each client gets a `: hb` every heartbeat_s and the writes of
  10,000 clients are spread over the interval instead of landing in one loop iteration.
- Redis gone: the subscription is reopened with capped, jittered exponential backoff; once it is
  back, every hub re-reads its sale and every sale client gets a fresh `sale` snapshot (stock may
  have moved while we were deaf), and every order client a `resync` event.
- Waiting rooms (sse.queue_hub): a sale's channel also feeds its queue hub, if anyone here waits in
  that sale's room; queue clients share the heartbeat slices.
Imports sse, adapters.redis_keys/redis_stock, domain, config, errors; never flashsale.api.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime

from flashsale import config, errors
from flashsale.adapters import redis_keys as keys
from flashsale.adapters.passes import Passes
from flashsale.adapters.redis_queue import RedisQueue
from flashsale.adapters.redis_stock import RedisStock, decode_event
from flashsale.sse import frames, metrics
from flashsale.sse.clients import END, HEARTBEAT, Client, OrderClient, SaleClient
from flashsale.sse.hub import Handle, SaleHub
from flashsale.sse.queue_client import QueueClient
from flashsale.sse.queue_hub import QueueRooms
from flashsale.sse.subscription import ORDER, SALE, Message, Subscription

logger = logging.getLogger(__name__)

HEARTBEAT_SLICES = 8  # 10k clients / 8 = 1,250 heartbeat writes per tick: a ~25 ms loop stall
# A silent subscription is pinged after 5 s and declared dead 5 s later: a half-open connection
# (Redis moved, a NAT forgot us) is noticed in <= 10 s instead of the kernel's ~15 min.
PING_AFTER_S = 5.0
BACKOFF_BASE_S = 0.1  # first retry at once-ish: a Redis restart is usually over in < 1 s
BACKOFF_CAP_S = 5.0  # never leave clients deaf longer than this after Redis is back


class LoopClock:
    """The hub's clock on the running loop."""

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()

    def time(self) -> float:
        now: float = self._loop.time()
        return now

    def call_later(self, delay: float, callback: Callable[[], None]) -> Handle:
        return self._loop.call_later(delay, callback)

    def wall(self) -> datetime:
        return datetime.now(UTC)


def backoff_delay(failures: int, rng: random.Random | None = None) -> float:
    """Capped exponential backoff with jitter, so many SSE pods do not reconnect in lockstep."""
    ceiling = min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2.0 ** min(failures, 16))
    jitter = rng.uniform(0.5, 1.0) if rng is not None else random.uniform(0.5, 1.0)
    return ceiling * jitter


class Feed:
    def __init__(
        self, settings: config.Settings, *, stock: RedisStock, subscription: Subscription
    ) -> None:
        self._settings = settings
        self._stock = stock
        self._subscription = subscription
        self._coalesce_s = settings.sse.coalesce_ms / 1000
        self._hubs: dict[str, SaleHub] = {}
        self.rooms = QueueRooms(queue=RedisQueue(stock), passes=Passes(settings.auth))
        self._watchers: dict[str, set[OrderClient]] = {}
        self._slices: list[set[Client]] = [set() for _ in range(HEARTBEAT_SLICES)]
        self._next_slice = 0
        self._tasks: list[asyncio.Task[None]] = []
        self._sessions = 0
        self._clock: LoopClock | None = None
        self.subscribed = False

    # --- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        self._clock = LoopClock()
        self.rooms.start(self._clock)
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._run()), loop.create_task(self._heartbeats())]

    def end_streams(self) -> None:
        """Server shutdown: every writer ends its response now (EventSource reconnects
        elsewhere) instead of holding the shutdown until the clients leave."""
        for clients in self._slices:
            for client in clients:
                client.close()

    async def stop(self) -> None:
        self.end_streams()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for hub in list(self._hubs.values()):
            await hub.aclose()
        await self.rooms.aclose()
        await self._subscription.aclose()

    # --- clients --------------------------------------------------------------------------------

    async def join_sale(self, sale_id: str, *, addr: str) -> SaleClient:
        """A new client of a sale. Raises SaleNotFound, or StoreUnavailable if the first read of
        the sale failed."""
        assert self._clock is not None, "Feed.start() first"
        hub = self._hubs.get(sale_id)
        if hub is None:
            hub = SaleHub(
                sale_id,
                clock=self._clock,
                coalesce_s=self._coalesce_s,
                fetch=self._stock.get_sale,
                on_gone=self._forget_hub,
            )
            self._hubs[sale_id] = hub
            hub.start()
        try:
            await asyncio.shield(hub.ready)
        except asyncio.CancelledError:
            if not hub.clients and hub.ready.done():
                hub.close()  # every joiner gave up: nobody would ever close it
            raise
        if hub.ended:
            raise errors.SaleNotFound()
        client = SaleClient(addr, hub)
        hub.clients.add(client)
        self._add(client)
        return client

    def join_orders(self, *, user_id: str, addr: str, expires_at: float) -> OrderClient:
        client = OrderClient(addr, user_id=user_id, expires_at=expires_at)
        self._watchers.setdefault(user_id, set()).add(client)
        self._add(client)
        return client

    async def join_queue(self, sale_id: str, *, user_id: str, addr: str) -> QueueClient:
        """A ticket holder of a sale's waiting room (errors: see QueueRooms.join)."""
        client = await self.rooms.join(sale_id, user_id=user_id, addr=addr)
        self._add(client)
        return client

    def leave(self, client: Client) -> None:
        for clients in self._slices:
            clients.discard(client)
        metrics.CLIENTS.labels(client.kind).dec()
        if isinstance(client, SaleClient):
            hub = client.hub
            assert isinstance(hub, SaleHub)
            hub.clients.discard(client)
            if not hub.clients and hub.ready.done():
                hub.close()
        elif isinstance(client, QueueClient):
            self.rooms.leave(client)
        elif isinstance(client, OrderClient):
            watchers = self._watchers.get(client.user_id)
            if watchers is not None:
                watchers.discard(client)
                if not watchers:
                    del self._watchers[client.user_id]

    def _add(self, client: Client) -> None:
        self._slices[self._next_slice].add(client)
        self._next_slice = (self._next_slice + 1) % HEARTBEAT_SLICES
        metrics.CLIENTS.labels(client.kind).inc()

    def _forget_hub(self, hub: SaleHub) -> None:
        if self._hubs.get(hub.sale_id) is hub:
            del self._hubs[hub.sale_id]

    # --- the subscription -----------------------------------------------------------------------

    async def _run(self) -> None:
        failures = 0
        while True:
            try:
                await self._session()
            except errors.StoreUnavailable as e:
                logger.warning("redis subscription lost (%s); retry #%d", e, failures + 1)
            except Exception:
                logger.exception("redis subscription failed; reconnecting")
            if self.subscribed:
                failures = 0
                metrics.REDIS_RECONNECTS.inc()
            self.subscribed = False
            metrics.REDIS_CONNECTED.set(0)
            await asyncio.sleep(backoff_delay(failures))
            failures += 1

    async def _session(self) -> None:
        try:
            await self._subscription.open()
            reconnected = self._sessions > 0
            self._sessions += 1
            await self._resync(reconnected=reconnected)
            self.subscribed = True
            metrics.REDIS_CONNECTED.set(1)
            if reconnected:
                logger.info("redis subscription re-established; %d sales re-read", len(self._hubs))
            await self._read()
        finally:
            await self._subscription.close()

    async def _resync(self, *, reconnected: bool) -> None:
        """Re-read every watched sale (each client gets a fresh snapshot)."""
        hubs = list(self._hubs.values())
        refreshes = (self._refresh(hub) for hub in hubs)
        results = await asyncio.gather(*refreshes, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result
        await self.rooms.resync()
        if reconnected:
            for watchers in self._watchers.values():
                for client in watchers:
                    client.resync("redis_reconnected")

    async def _refresh(self, hub: SaleHub) -> None:
        if not hub.ready.done():
            hub.request_refresh()  # its first read may predate the subscription: read again
            return
        with contextlib.suppress(errors.SaleNotFound):  # the hub ended itself
            await hub.refresh()

    async def _read(self) -> None:
        loop = asyncio.get_running_loop()
        pinged = False
        while True:
            message = await self._subscription.next(PING_AFTER_S)
            if message is None:
                if pinged:
                    raise errors.StoreUnavailable("redis pub/sub: no answer to ping")
                await self._subscription.ping()
                pinged = True
                continue
            pinged = False
            self.dispatch(message, received_at=loop.time())

    def dispatch(self, message: Message, *, received_at: float) -> None:
        try:
            if message.kind == SALE:
                self._on_sale_message(message, received_at=received_at)
            elif message.kind == ORDER:
                self._on_order_message(message, received_at=received_at)
        except (ValueError, KeyError, TypeError) as e:
            logger.warning("ignored a malformed event on %s: %s", message.channel, e)

    def _on_sale_message(self, message: Message, *, received_at: float) -> None:
        sale_id = keys.sale_id_from_channel(message.channel)
        hub = self._hubs.get(sale_id)
        room = self.rooms.get(sale_id)
        if hub is None and room is None:
            return  # nobody here watches this sale
        doc = decode_event(message.data)
        if room is not None:
            room.on_message(doc)
        if hub is None:
            return
        kind = doc.get("type")
        if kind == "stock":
            hub.on_stock(int(doc["remaining"]), int(doc["seq"]), received_at=received_at)
        elif kind == "sale":
            hub.on_sale_changed(int(doc["seq"]))
        elif kind == "deleted":
            hub.end()

    def _on_order_message(self, message: Message, *, received_at: float) -> None:
        doc = decode_event(message.data)
        watchers = self._watchers.get(str(doc.get("user_id")))
        if not watchers:
            return
        frame = frames.order_frame(doc)
        for client in watchers:
            client.push(frame, ready_at=received_at)

    # --- heartbeats -----------------------------------------------------------------------------

    async def _heartbeats(self) -> None:
        period = self._settings.sse.heartbeat_s / HEARTBEAT_SLICES
        index = 0
        while True:
            await asyncio.sleep(period)
            now = time.time()
            for client in self._slices[index]:
                if isinstance(client, OrderClient) and client.expires_at <= now:
                    client.mark(END)  # the token expired: the client reconnects with a new one
                else:
                    client.mark(HEARTBEAT)
            index = (index + 1) % HEARTBEAT_SLICES
