"""One sale's waiting room in this SSE process (QueueHub), and the registry of them (QueueRooms).

The process never asks Redis per client per second. A hub reads the room once (queue.lua's
`schedule`: the admission schedule, the draw, the seed) and again only when a pub/sub message says
the sale changed; `queue` messages carry the new schedule itself (a sell-out pause, a resume).
Each client's rank is read once, at connect. From then on everything is computed here from the
schedule and the clock (Redis TIME, its offset measured at each read): a 1 s tick marks the clients
whose position changed, and a timer set at the next admission moment confirms each admission with
one `status` call (which fixes the pass's expiry in Redis) and mints the pass in memory. A random
pre-queue is ranked here at the draw, with the domain's permutation and the room's seed.
Imports domain, errors, adapters (the queue store, passes) and sse modules; never HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import heapq
import itertools
import logging
from collections.abc import Callable
from typing import Any

from flashsale import errors
from flashsale.adapters.passes import Passes
from flashsale.adapters.redis_queue import RedisQueue
from flashsale.domain import waiting_room as wr
from flashsale.domain.sales import from_ms, rfc3339, to_ms
from flashsale.sse import metrics
from flashsale.sse.hub import Clock, Handle, HubBase
from flashsale.sse.queue_client import CLOSED, DISABLED, POSITION, SOLD_OUT, QueueClient

logger = logging.getLogger(__name__)

TICK_S = 1.0  # positions: at most one event a second per client (the contract's coalescing)
# Redis did not see an admission the local schedule saw (hosts' clocks a few ms apart): look again
# this soon rather than wait for the next tick.
RECHECK_S = 0.05
MIN_TIMER_S = 0.001  # a timer that fires a hair early must not spin
# Our Redis clock is measured at each read (Redis TIME minus our wall clock), then runs on our wall
# clock, which may drift a few ms from Redis's host until the next read: confirming admissions this
# much later than our clock says keeps Redis's "not yet" (and a recheck) rare.
ADMIT_MARGIN_MS = 5
# Admissions confirmed at once: each is one short script; 32 in flight keep up with thousands/s.
CONFIRM_CONCURRENCY = 32
# Clients ranked per loop turn at a random draw: a permutation is ~8 SHA-1 rounds (~10 us), so 500
# keep a turn to ~5 ms, and 10,000 waiting clients are ranked in ~0.1 s without stalling streams.
RANK_CHUNK = 500
WINDOW_MARGIN_S = 0.001  # fire just past opens_at/closes_at, as the sale hub does


class QueueHub(HubBase):
    def __init__(
        self,
        sale_id: str,
        *,
        clock: Clock,
        queue: RedisQueue,
        passes: Passes,
        on_gone: Callable[[QueueHub], None],
    ) -> None:
        super().__init__(on_gone)
        self.sale_id = sale_id
        self.clients: set[QueueClient] = set()
        self.state: wr.RoomState | None = None
        self.ended = False
        self._clock = clock
        self._queue = queue
        self._passes = passes
        self._version = -1
        self._offset_ms = 0.0  # Redis TIME minus our wall clock
        self._heap: list[tuple[int, int, QueueClient]] = []  # waiting clients by rank
        self._undrawn: set[QueueClient] = set()  # random pre-queue, before the draw
        self._order = itertools.count()
        self._slots = asyncio.Semaphore(CONFIRM_CONCURRENCY)
        self._admit: Handle | None = None
        self._tick: Handle | None = None
        self._window: Handle | None = None

    # --- lifecycle --------------------------------------------------------------------------------

    def _cancel_timers(self) -> None:
        for handle in (self._admit, self._tick, self._window):
            if handle is not None:
                handle.cancel()

    def end(self, flag: int) -> None:
        """The room is over for everyone (CLOSED or DISABLED): last event, then the end."""
        if self.ended:
            return
        self.ended = True
        for client in self.clients:
            client.mark(flag, ready_at=self._clock.time())
        self.close()

    # --- clients ----------------------------------------------------------------------------------

    def add(self, client: QueueClient, status: wr.TicketStatus) -> None:
        self.clients.add(client)
        if status.is_admitted:
            self._grant(client, status)
        elif client.rank is None:
            self._undrawn.add(client)
        else:
            heapq.heappush(self._heap, (client.rank, next(self._order), client))
            self._schedule_admit()
        if self.state is not None and self.state.schedule.paused:
            client.mark(SOLD_OUT)
        self._ensure_tick()

    def position_of(self, rank: int | None) -> tuple[int | None, int | None]:
        """(position, estimated_wait_s) now; (None, None) before a random draw. A client whose
        admission is being confirmed is still "next" (position 1)."""
        if rank is None or self.state is None:
            return None, None
        schedule, now = self.state.schedule, self.now_ms()
        position = max(1, wr.position(rank, schedule.admitted(now)))
        if schedule.paused:
            return position, None  # sold out: no wait can be promised
        until_open = schedule.opens_ms - now
        wait = wr.estimated_wait_s(position_=position, rate=schedule.rate, until_open_ms=until_open)
        return position, wait

    def now_ms(self) -> int:
        return int(to_ms(self._clock.wall()) + self._offset_ms)

    # --- updates ----------------------------------------------------------------------------------

    def on_message(self, doc: dict[str, Any]) -> None:
        """A message on the sale's channel (decoded once by the feed)."""
        kind = doc.get("type")
        if kind == "queue":
            self._on_schedule(doc)
        elif kind == "sale":
            self.request_refresh()  # a new definition: window, rate or the room switched off
        elif kind == "deleted":
            self.end(CLOSED)

    def _on_schedule(self, doc: dict[str, Any]) -> None:
        version = int(doc["ver"])
        if self.state is None or version <= self._version:
            return  # still loading (the read decides), or older than what we hold
        self._version = version
        old = self.state.schedule
        schedule = dataclasses.replace(
            old,
            base=int(doc["base"]),
            since_ms=int(doc["since"]),
            rate=int(doc["rate"]),
            paused=bool(int(doc["paused"])),
        )
        self.state = dataclasses.replace(self.state, schedule=schedule)
        self._schedule_changed(was_paused=old.paused)

    async def _refresh_in_background(self) -> None:
        with contextlib.suppress(errors.FlashSaleError):  # refresh() ended the hub, or Redis is
            await self.refresh()  # away: the feed re-reads every hub once it is back

    async def refresh(self) -> None:
        """Re-read the room. A room that is gone ends the hub (and the error is raised)."""
        self._refreshing = True
        try:
            while True:
                self._refresh_again = False
                try:
                    state = await self._queue.state(self.sale_id)
                except (errors.SaleNotFound, errors.WaitingRoomDisabled) as e:
                    if self.state is not None:
                        self.end(CLOSED if isinstance(e, errors.SaleNotFound) else DISABLED)
                    raise
                if state.now_ms >= state.closes_ms:
                    if self.state is None:
                        raise errors.SaleClosed()  # the first read: nobody to tell
                    self.end(CLOSED)
                    return
                self._apply(state)
                if not self._refresh_again:
                    return
        finally:
            self._refreshing = False

    def _apply(self, state: wr.RoomState) -> None:
        self._offset_ms = state.now_ms - to_ms(self._clock.wall())
        was_paused = self.state is not None and self.state.schedule.paused
        self.state, self._version = state, max(self._version, state.version)
        if state.drawn is not None and self._undrawn:
            self._spawn(self._rank_undrawn())
        self._schedule_changed(was_paused=was_paused)
        self._schedule_window()

    def _schedule_changed(self, *, was_paused: bool) -> None:
        assert self.state is not None
        paused = self.state.schedule.paused
        now = self._clock.time()
        for client in self.clients:
            if paused and not was_paused:
                client.mark(SOLD_OUT, ready_at=now)
            elif not paused and not client.admitted:
                client.mark(POSITION, ready_at=now)  # resumed or re-rated: new positions/waits
        self._schedule_admit()
        self._ensure_tick()

    # --- the draw, admissions, positions ---------------------------------------------------------

    async def _rank_undrawn(self) -> None:
        """A random pre-queue was drawn: rank its waiting clients with the seed's permutation."""
        assert self.state is not None
        state = self.state
        for count, client in enumerate(list(self._undrawn), start=1):
            if client in self._undrawn:
                self._undrawn.discard(client)
                client.rank = wr.rank(
                    client.seq, mode=state.mode, drawn=state.drawn, seed=state.seed
                )
                if client.rank is not None:
                    heapq.heappush(self._heap, (client.rank, next(self._order), client))
                    client.mark(POSITION)
            if count % RANK_CHUNK == 0:
                await asyncio.sleep(0)
        self._schedule_admit()

    def _schedule_admit(self) -> None:
        if self._admit is not None:
            self._admit.cancel()
            self._admit = None
        while self._heap and self._heap[0][2].finished:
            heapq.heappop(self._heap)
        if self._closed or self.state is None or not self._heap:
            return
        due = self.state.schedule.admission_ms(self._heap[0][0])
        if due is not None:
            delay = max(MIN_TIMER_S, (due + ADMIT_MARGIN_MS - self.now_ms()) / 1000)
            self._admit = self._clock.call_later(delay, self._on_admit)

    def _on_admit(self) -> None:
        self._admit = None
        assert self.state is not None
        admitted = self.state.schedule.admitted(self.now_ms() - ADMIT_MARGIN_MS)
        while self._heap and self._heap[0][0] < admitted:
            client = heapq.heappop(self._heap)[2]
            if not client.finished:
                self._spawn(self._confirm(client))
        self._schedule_admit()

    async def _confirm(self, client: QueueClient) -> None:
        """Our schedule says `client` is admitted: let Redis agree (and fix the pass's expiry)."""
        async with self._slots:
            if client.finished:
                return
            try:
                status = await self._queue.status(sale_id=self.sale_id, user_id=client.user_id)
            except errors.NotInQueue:
                client.mark(CLOSED)  # its ticket is gone (the sale was re-created)
                return
            except errors.StoreUnavailable:
                status = None
            except errors.FlashSaleError:
                self.request_refresh()  # closed, deleted or switched off: the read tells all
                return
        if status is not None and status.is_admitted:
            self._grant(client, status)
            return
        if client.rank is not None:  # not yet by Redis's clock (or Redis away): soon again
            heapq.heappush(self._heap, (client.rank, next(self._order), client))
        self._admit_soon()

    def _admit_soon(self) -> None:
        if self._admit is not None:
            self._admit.cancel()
        self._admit = self._clock.call_later(RECHECK_S, self._on_admit)

    def _grant(self, client: QueueClient, status: wr.TicketStatus) -> None:
        expires_s = status.pass_expiry_s()
        assert expires_s is not None
        assert status.admitted_ms is not None
        token = self._passes.mint_pass(
            user_id=client.user_id, sale_id=self.sale_id, expires_at_s=expires_s
        )
        client.admit(token, expires_at=rfc3339(from_ms(expires_s * 1000)))
        if status.first_admission:
            metrics.QUEUE_PASSES.inc()
            metrics.QUEUE_WAIT_SECONDS.observe((status.admitted_ms - status.joined_ms) / 1000)

    def _ensure_tick(self) -> None:
        if self._tick is None and not self._closed and self.clients:
            self._tick = self._clock.call_later(TICK_S, self._on_tick)

    def _on_tick(self) -> None:
        self._tick = None
        now = self._clock.time()
        waiting = False
        for client in self.clients:
            if client.admitted or client.finished:
                continue
            waiting = True
            if client.rank is not None and client.position_due(now):
                client.mark(POSITION, ready_at=now)
        if waiting:
            self._ensure_tick()

    def _schedule_window(self) -> None:
        if self._window is not None:
            self._window.cancel()
            self._window = None
        if self.state is None or self._closed:
            return
        now = self.now_ms()
        opens, closes = self.state.schedule.opens_ms, self.state.closes_ms
        target, callback = (
            (opens, self.request_refresh) if now < opens else (closes, self._on_close)
        )
        delay = (target - now) / 1000 + WINDOW_MARGIN_S
        self._window = self._clock.call_later(max(MIN_TIMER_S, delay), callback)

    def _on_close(self) -> None:
        self._window = None
        self.end(CLOSED)


class QueueRooms:
    """The process's waiting-room hubs, one per watched sale, made by their first client."""

    def __init__(self, *, queue: RedisQueue, passes: Passes) -> None:
        self._queue = queue
        self._passes = passes
        self._hubs: dict[str, QueueHub] = {}
        self._clock: Clock | None = None

    def start(self, clock: Clock) -> None:
        self._clock = clock

    def get(self, sale_id: str) -> QueueHub | None:
        return self._hubs.get(sale_id)

    async def join(self, sale_id: str, *, user_id: str, addr: str) -> QueueClient:
        """A ticket holder connects. Raises SaleNotFound, NotInQueue, SaleClosed,
        WaitingRoomDisabled or StoreUnavailable."""
        assert self._clock is not None, "QueueRooms.start() first"
        hub = self._hubs.get(sale_id)
        if hub is None:
            hub = self._hubs[sale_id] = QueueHub(
                sale_id,
                clock=self._clock,
                queue=self._queue,
                passes=self._passes,
                on_gone=self._forget,
            )
            hub.start()
        try:
            await asyncio.shield(hub.ready)
            if hub.ended:
                raise errors.SaleClosed()  # it ended while we waited for it
            status = await self._queue.status(sale_id=sale_id, user_id=user_id)
        except BaseException:
            if not hub.clients and hub.ready.done():
                hub.close()  # nobody else holds it: it would never be closed
            raise
        client = QueueClient(addr, hub, user_id=user_id, seq=status.seq, rank=status.rank)
        hub.add(client, status)
        return client

    def leave(self, client: QueueClient) -> None:
        hub = client.hub
        assert isinstance(hub, QueueHub)
        hub.clients.discard(client)
        if not hub.clients and hub.ready.done():
            hub.close()

    def dispatch(self, sale_id: str, doc: dict[str, Any]) -> None:
        hub = self._hubs.get(sale_id)
        if hub is not None:
            hub.on_message(doc)

    async def resync(self) -> None:
        """After a lost subscription: re-read every room (messages may have been missed)."""
        for hub in list(self._hubs.values()):
            if hub.ready.done():
                with contextlib.suppress(errors.FlashSaleError):
                    await hub.refresh()

    async def aclose(self) -> None:
        for hub in list(self._hubs.values()):
            await hub.aclose()

    def _forget(self, hub: QueueHub) -> None:
        if self._hubs.get(hub.sale_id) is hub:
            del self._hubs[hub.sale_id]
