"""One connected client of a stream: what it still has to be sent, and nothing more.

A sale client holds no queue at all: it holds flags ("a snapshot / a state change / a stock change
is due") and the id and state it was last sent. When its writer runs it asks the sale's hub for the
*current* frames, so a slow client skips straight to the latest value and memory per client stays
a few dozen bytes however far behind it is. An order client needs a real queue (each order event is
distinct), bounded at ORDER_QUEUE_MAX: past that its queue is dropped for one `resync` event.
Imports the domain, frames and metrics only; knows nothing about Redis or HTTP.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Protocol

from flashsale.domain.sales import SaleState
from flashsale.sse import frames, metrics

# Flags: what is due for a client. Several may be set before its writer runs; take() folds them.
SNAPSHOT = 1  # the full `sale` document (first event, after a definition change or a Redis outage)
STATE = 2  # the derived state changed
STOCK = 4  # a coalesced stock tick of the sale
HEARTBEAT = 8  # nothing written for a while: a comment keeps the connection alive
END = 16  # write the final frames and end the stream
RESYNC = 32  # order stream: events may have been missed

# 64 order events waiting for one client: a buyer's order has at most 3 status changes, so this is
# dozens of orders' worth; a client this far behind has stopped reading.
ORDER_QUEUE_MAX = 64


class SaleView(Protocol):
    """What a sale client reads from its hub (sse.hub.SaleHub) when its writer runs."""

    @property
    def seq(self) -> int: ...
    @property
    def state(self) -> str: ...
    def sale_frame(self) -> bytes: ...
    def state_frame(self) -> bytes: ...
    def stock_frame(self) -> bytes: ...
    def closed_frame(self) -> bytes: ...
    def deleted_frame(self) -> bytes: ...


class Client:
    """Base: flags, the writer's wake-up future and the fan-out clock."""

    __slots__ = ("_flags", "_pending_since", "_waiter", "addr", "closed", "ended")
    kind = ""

    def __init__(self, addr: str) -> None:
        self.addr = addr
        self._flags = 0
        self._pending_since: float | None = None
        self._waiter: asyncio.Future[None] | None = None
        self.closed = False  # the peer went away (or the server is stopping)
        self.ended = False  # the final frames were taken: the writer ends the response

    @property
    def finished(self) -> bool:
        return self.closed or self.ended

    def mark(self, flags: int, *, ready_at: float | None = None) -> None:
        """Something is due; `ready_at` (loop time) starts the fan-out clock for an event."""
        self._flags |= flags
        if ready_at is not None and self._pending_since is None:
            self._pending_since = ready_at
        self._wake()

    def close(self) -> None:
        self.closed = True
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def wait(self) -> None:
        """Until something is due (returns at once if it already is)."""
        if self._flags or self.closed:
            return
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    def take(self, now: float) -> bytes:
        """The bytes to write now (possibly empty); clears what it covered."""
        flags, self._flags = self._flags, 0
        body = self._frames(flags)
        if self._pending_since is not None and body:
            metrics.FANOUT_SECONDS.observe(max(0.0, now - self._pending_since))
            self._pending_since = None
        if not body and flags & HEARTBEAT:
            metrics.EVENTS["heartbeat"].inc()
            body = frames.HEARTBEAT
        return body

    def _frames(self, flags: int) -> bytes:
        raise NotImplementedError


class SaleClient(Client):
    """A client of GET /v1/sales/{id}/events."""

    __slots__ = ("hub", "last_seq", "sent_state")
    kind = "sale"

    def __init__(self, addr: str, hub: SaleView) -> None:
        super().__init__(addr)
        self.hub = hub
        self.last_seq = -1  # the id last written: ids never go backwards
        self.sent_state: str | None = None
        self._flags = SNAPSHOT

    def _frames(self, flags: int) -> bytes:
        hub, parts = self.hub, []
        if flags & SNAPSHOT:
            if self.sent_state is not None and self.sent_state != hub.state:
                parts.append(hub.state_frame())  # a state listener must see the change too
                metrics.EVENTS["state"].inc()
            parts.append(hub.sale_frame())
            metrics.EVENTS["sale"].inc()
            self.sent_state, self.last_seq = hub.state, max(self.last_seq, hub.seq)
        elif flags & STATE and hub.state != self.sent_state:
            parts.append(hub.state_frame())
            metrics.EVENTS["state"].inc()
            self.sent_state, self.last_seq = hub.state, max(self.last_seq, hub.seq)
        # A state change that was undone before this client's turn (sold out, then a unit came
        # back) still moved the stock: the latest stock value covers it.
        if flags & (STOCK | STATE) and hub.seq > self.last_seq:
            parts.append(hub.stock_frame())
            metrics.EVENTS["stock"].inc()
            self.last_seq = hub.seq
        if flags & END:  # the sale was deleted: `state` closed (unless seen), `deleted`, the end
            if self.sent_state != SaleState.CLOSED:
                parts.append(hub.closed_frame())
                metrics.EVENTS["state"].inc()
            parts.append(hub.deleted_frame())
            metrics.EVENTS["deleted"].inc()
            self.ended = True
        return b"".join(parts)


class OrderClient(Client):
    """A client of GET /v1/me/events: the caller's order events, in order, bounded."""

    __slots__ = ("_queue", "_resync_reason", "expires_at", "user_id")
    kind = "me"

    def __init__(self, addr: str, *, user_id: str, expires_at: float) -> None:
        super().__init__(addr)
        self.user_id = user_id
        self.expires_at = expires_at  # the token's exp (epoch s): the stream ends then
        self._queue: deque[bytes] = deque()
        self._resync_reason = ""

    def push(self, frame: bytes, *, ready_at: float) -> None:
        if len(self._queue) >= ORDER_QUEUE_MAX:
            self._queue.clear()
            self.resync("overflow")
            return
        self._queue.append(frame)
        self.mark(0, ready_at=ready_at)

    def resync(self, reason: str) -> None:
        self._resync_reason = reason
        self.mark(RESYNC)

    def _frames(self, flags: int) -> bytes:
        parts = []
        if flags & RESYNC:
            parts.append(frames.resync_frame(self._resync_reason))
            metrics.EVENTS["resync"].inc()
        if self._queue:
            metrics.EVENTS["order"].inc(len(self._queue))
            parts.extend(self._queue)
            self._queue.clear()
        if flags & END:
            self.ended = True
        return b"".join(parts)

    async def wait(self) -> None:
        if self._queue:
            return
        await super().wait()
