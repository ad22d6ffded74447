"""One watched sale in this process: its latest known state, the coalescing of its stock updates,
the timers of its window, and the set of clients watching it.

All updates of a sale pass through its hub once, whatever the number of clients: stock messages are
folded here (leading edge at once, then at most one tick per coalescing window, always a trailing
tick for the last value), state changes are derived here (a message, or a timer at opens_at and
closes_at that nobody publishes), and the frames are encoded here once and shared. Ids are the
sale's `seq` from Redis; an update with a seq we have already seen is dropped, which also makes the
race between a snapshot read and the subscription harmless. Imports domain, errors and sse modules;
never Redis or HTTP (the snapshot reader is passed in).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Awaitable, Callable, Coroutine
from datetime import datetime
from typing import Any, Protocol

from flashsale import errors
from flashsale.domain.sales import SaleSnapshot, SaleState
from flashsale.sse import frames, metrics
from flashsale.sse.clients import END, SNAPSHOT, STATE, STOCK, SaleClient

logger = logging.getLogger(__name__)

# The state flips when now >= the boundary; firing 1 ms past it makes sure the wall clock has
# crossed it even when the loop's monotonic clock runs a little ahead of the wall clock.
WINDOW_MARGIN_S = 0.001
# A failed background re-read (Redis hiccup) is retried this many times, this far apart; a longer
# outage is the subscription's business, which re-reads every hub once it is back.
REFRESH_ATTEMPTS = 3
REFRESH_RETRY_S = 0.5

Fetch = Callable[[str], Awaitable[SaleSnapshot]]


class Handle(Protocol):
    def cancel(self) -> None: ...


class Clock(Protocol):
    """Time for the hub: the loop's monotonic clock, its timers, and the wall clock for states."""

    def time(self) -> float: ...
    def call_later(self, delay: float, callback: Callable[[], None]) -> Handle: ...
    def wall(self) -> datetime: ...


class HubBase:
    """What both kinds of hub share: the `ready` future joiners wait on (settled by the first
    read), background tasks, a re-read requested while one runs being done once more after it,
    and a close that stops timers and tasks once and tells the owner the hub is gone."""

    def __init__(self, on_gone: Callable[[Any], None]) -> None:
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        # A joiner that gave up must not leave "exception never retrieved" behind.
        self.ready.add_done_callback(lambda f: f.cancelled() or f.exception())
        self._on_gone = on_gone
        self._refreshing = False
        self._refresh_again = False
        self._closed = False
        self._tasks: set[asyncio.Task[None]] = set()

    async def refresh(self) -> None:
        raise NotImplementedError

    async def _refresh_in_background(self) -> None:
        raise NotImplementedError

    def _cancel_timers(self) -> None:
        raise NotImplementedError

    def start(self) -> None:
        """Read the first snapshot in the background; `ready` tells the joiners how it went."""
        self._spawn(self._load())

    async def _load(self) -> None:
        try:
            await self.refresh()
        except errors.FlashSaleError as e:
            self.ready.set_exception(e)
            self.close()
            return
        if not self.ready.done():  # close() may have settled it meanwhile (the server stopping)
            self.ready.set_result(None)

    def request_refresh(self) -> None:
        """Re-read now, or once more after the read in progress."""
        if self._refreshing:
            self._refresh_again = True
        else:
            self._spawn(self._refresh_in_background())

    def close(self) -> None:
        """Stop timers and background reads; forget the hub (no client is left, or it ended)."""
        if self._closed:
            return
        self._closed = True
        self._cancel_timers()
        current = asyncio.current_task()
        for task in self._tasks:
            if task is not current:
                task.cancel()
        if not self.ready.done():
            self.ready.set_exception(errors.StoreUnavailable("the SSE server is stopping"))
        self._on_gone(self)

    async def aclose(self) -> None:
        tasks = list(self._tasks)
        self.close()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


class SaleHub(HubBase):
    def __init__(
        self,
        sale_id: str,
        *,
        clock: Clock,
        coalesce_s: float,
        fetch: Fetch,
        on_gone: Callable[[SaleHub], None],
    ) -> None:
        super().__init__(on_gone)
        self.sale_id = sale_id
        self.clients: set[SaleClient] = set()
        self.remaining = 0
        self.seq = -1
        self.state = SaleState.SCHEDULED
        self.ended = False
        self._clock = clock
        self._coalesce_s = coalesce_s
        self._fetch = fetch
        self._snapshot: SaleSnapshot | None = None
        self._broadcast_seq = -1  # the newest seq handed to clients (tick, state or snapshot)
        self._last_tick = float("-inf")
        self._tick: Handle | None = None
        self._window: Handle | None = None
        self._wanted_seq = -1  # the newest `sale` message seen while the first read ran
        self._cache: dict[str, bytes] = {}

    # --- lifecycle --------------------------------------------------------------------------------

    def _cancel_timers(self) -> None:
        for handle in (self._tick, self._window):
            if handle is not None:
                handle.cancel()
        self._tick = self._window = None

    def end(self) -> None:
        """The sale is gone (deleted, or deleted and created anew): final frames, then close."""
        if self.ended:
            return
        self.ended = True
        now = self._clock.time()
        for client in self.clients:
            client.mark(END, ready_at=now)
        self.close()

    # --- updates ----------------------------------------------------------------------------------

    def on_stock(self, remaining: int, seq: int, *, received_at: float) -> None:
        if seq <= self.seq or self.ended:
            return  # already covered by a snapshot or a newer message
        superseded = self.seq > self._broadcast_seq
        self.remaining, self.seq = remaining, seq
        self._cache.clear()
        if self._snapshot is None:
            return  # still loading: the snapshot read decides what is newest
        if self._update_state(ready_at=received_at):
            self._broadcast_seq = seq  # the state event carries this value
            return
        if superseded:
            metrics.COALESCED.inc()
        if self._tick is None:
            wait = self._last_tick + self._coalesce_s - self._clock.time()
            if wait <= 0:
                self._emit_stock(ready_at=received_at)
            else:
                self._tick = self._clock.call_later(wait, self._on_tick)

    def on_sale_changed(self, seq: int) -> None:
        """The definition or the window changed: re-read the sale (once, however many arrive)."""
        if self.ended:
            return
        if self._snapshot is None:
            # Still loading: the first read re-reads only if it turns out older than this.
            self._wanted_seq = max(self._wanted_seq, seq)
        elif seq > self.seq:
            self.request_refresh()

    def _on_tick(self) -> None:
        self._tick = None
        if self.seq > self._broadcast_seq:
            self._emit_stock(ready_at=self._clock.time())

    def _emit_stock(self, *, ready_at: float) -> None:
        self._last_tick = self._clock.time()
        self._broadcast_seq = self.seq
        for client in self.clients:
            client.mark(STOCK, ready_at=ready_at)

    def _on_window(self) -> None:
        self._window = None
        self._update_state(ready_at=self._clock.time())
        self._schedule_window()

    def _update_state(self, *, ready_at: float) -> bool:
        """Derive the state now; tell every client at once if it changed."""
        state = self._derive()
        if state == self.state:
            return False
        logger.debug("sale %s is now %s", self.sale_id, state.value)
        self.state = state
        self._cache.clear()
        for client in self.clients:
            client.mark(STATE, ready_at=ready_at)
        return True

    def _derive(self) -> SaleState:
        assert self._snapshot is not None
        return dataclasses.replace(self._snapshot, remaining=self.remaining).state(
            self._clock.wall()
        )

    def _schedule_window(self) -> None:
        if self._window is not None:
            self._window.cancel()
            self._window = None
        if self._snapshot is None or self.ended:
            return
        now = self._clock.wall()
        boundary = next(
            (t for t in (self._snapshot.opens_at, self._snapshot.closes_at) if now < t), None
        )
        if boundary is not None:
            delay = (boundary - now).total_seconds() + WINDOW_MARGIN_S
            self._window = self._clock.call_later(delay, self._on_window)

    # --- snapshots --------------------------------------------------------------------------------

    async def refresh(self) -> None:
        """Re-read the sale (again, if it changed meanwhile) and send every client a snapshot.
        Raises SaleNotFound (after ending the hub) or StoreUnavailable."""
        self._refreshing = True
        try:
            while True:
                self._refresh_again = False
                seq_before = self.seq
                try:
                    snapshot = await self._fetch(self.sale_id)
                except errors.SaleNotFound:
                    if self._snapshot is not None:  # a first read that fails has nobody to tell
                        self.end()
                    raise
                if snapshot.seq < seq_before:
                    # Redis counts seq up from 0 for a sale created anew under the same id: what
                    # the clients saw belongs to a sale that no longer exists.
                    self.end()
                    raise errors.SaleNotFound("the sale was deleted and created again")
                self._apply(snapshot)
                if not self._refresh_again and self._wanted_seq <= snapshot.seq:
                    return
        finally:
            self._refreshing = False

    async def _refresh_in_background(self) -> None:
        for attempt in range(1, REFRESH_ATTEMPTS + 1):
            try:
                await self.refresh()
                return
            except errors.SaleNotFound:
                return  # refresh() ended the hub
            except errors.StoreUnavailable as e:
                logger.warning("re-reading sale %s failed (#%d): %s", self.sale_id, attempt, e)
                await asyncio.sleep(REFRESH_RETRY_S * attempt)

    def _apply(self, snapshot: SaleSnapshot) -> None:
        if snapshot.seq >= self.seq:
            self.remaining, self.seq = snapshot.remaining, snapshot.seq
        self._snapshot = snapshot
        self._broadcast_seq = self.seq
        if self._tick is not None:
            self._tick.cancel()
            self._tick = None
        self.state = self._derive()
        self._cache.clear()
        self._schedule_window()
        now = self._clock.time()
        for client in self.clients:
            client.mark(SNAPSHOT, ready_at=now)

    # --- frames (built once per change, shared by every client) -----------------------------------

    def _cached(self, key: str, build: Callable[[], bytes]) -> bytes:
        frame = self._cache.get(key)
        if frame is None:
            frame = self._cache[key] = build()
        return frame

    def sale_frame(self) -> bytes:
        def build() -> bytes:
            assert self._snapshot is not None
            current = dataclasses.replace(self._snapshot, remaining=self.remaining)
            doc = current.document(self._clock.wall())
            doc["state"] = self.state.value  # the state the other events announced, timer-exact
            return frames.event("sale", doc, event_id=self.seq)

        return self._cached("sale", build)

    def state_frame(self) -> bytes:
        return self._cached(
            "state",
            lambda: frames.event(
                "state",
                frames.state_data(state=self.state.value, remaining=self.remaining, seq=self.seq),
                event_id=self.seq,
            ),
        )

    def stock_frame(self) -> bytes:
        return self._cached(
            "stock",
            lambda: frames.event(
                "stock",
                frames.stock_data(remaining=self.remaining, state=self.state.value, seq=self.seq),
                event_id=self.seq,
            ),
        )

    def closed_frame(self) -> bytes:
        """A deleted sale's last `state` (closed), for a client that has not seen it closed."""
        seq = max(self.seq, 0)
        closed = frames.state_data(state=SaleState.CLOSED.value, remaining=self.remaining, seq=seq)
        return frames.event("state", closed, event_id=seq)

    def deleted_frame(self) -> bytes:
        """The very last frame of a deleted sale's stream."""
        return frames.event("deleted", {"sale_id": self.sale_id}, event_id=max(self.seq, 0))
