"""One connected ticket holder of GET /v1/sales/{id}/queue/events: flags of what is due, its rank,
the position it was last sent, and its pass once admitted.

Events: `position {position, estimated_wait_s}` (at connect, then at most once a second and only
when it changed), `admitted {pass, expires_at}` (once), `sold_out {}` (admission paused: the last
unit went; positions follow again if a unit comes back), `closed {}` (the sale closed or was
deleted; the stream ends) and `waiting_room_disabled {}` (buy without a pass now; the stream ends).
The position is read from the hub when the writer runs, so a slow client skips to the latest one.
Imports frames, metrics and the sse client base; knows nothing about Redis or HTTP.
"""

from __future__ import annotations

from typing import Protocol

from flashsale.sse import frames, metrics
from flashsale.sse.clients import Client

POSITION = 64  # the position may have changed
ADMITTED = 128  # the pass is ready
SOLD_OUT = 256  # admission paused: sold out
CLOSED = 512  # the sale closed: final event, then the end
DISABLED = 1024  # the waiting room was switched off: final event, then the end

# At most one position event per second per client (the contract's coalescing); a little less so a
# tick that fires a few ms early still sends.
POSITION_GAP_S = 0.95

SOLD_OUT_FRAME = frames.event("sold_out", {})
CLOSED_FRAME = frames.event("closed", {})
DISABLED_FRAME = frames.event("waiting_room_disabled", {})


class QueueView(Protocol):
    """What a queue client reads from its hub (sse.queue_hub.QueueHub) when its writer runs."""

    def position_of(self, rank: int | None) -> tuple[int | None, int | None]: ...


class QueueClient(Client):
    __slots__ = (
        "_now",
        "admitted_frame",
        "admitted_sent",
        "hub",
        "position_sent_at",
        "rank",
        "sent_position",
        "seq",
        "user_id",
    )
    kind = "queue"

    def __init__(
        self, addr: str, hub: QueueView, *, user_id: str, seq: int, rank: int | None
    ) -> None:
        super().__init__(addr)
        self.hub = hub
        self.user_id = user_id
        self.seq = seq
        self.rank = rank  # None: a random pre-queue not drawn yet
        self.admitted_frame: bytes | None = None
        self.admitted_sent = False
        self.sent_position: int | None = -1  # nothing sent yet: the first position always goes
        self.position_sent_at = float("-inf")
        self._now = 0.0  # the writer's loop time, for the position gap
        self._flags = POSITION

    @property
    def admitted(self) -> bool:
        return self.admitted_frame is not None

    def admit(self, token: str, *, expires_at: str) -> None:
        if self.admitted_frame is None:
            data = {"pass": token, "expires_at": expires_at}
            self.admitted_frame = frames.event("admitted", data)
            self.mark(ADMITTED)

    def position_due(self, now: float) -> bool:
        """Whether a tick at loop time `now` has something new to send (and may send it)."""
        if self.admitted or now - self.position_sent_at < POSITION_GAP_S:
            return False
        return self.hub.position_of(self.rank)[0] != self.sent_position

    def take(self, now: float) -> bytes:
        self._now = now
        return super().take(now)

    def _frames(self, flags: int) -> bytes:
        if flags & (CLOSED | DISABLED):
            self.ended = True
            name = "closed" if flags & CLOSED else "waiting_room_disabled"
            metrics.EVENTS[name].inc()
            return CLOSED_FRAME if flags & CLOSED else DISABLED_FRAME
        parts = []
        if flags & SOLD_OUT:
            parts.append(SOLD_OUT_FRAME)
            metrics.EVENTS["sold_out"].inc()
        if self.admitted_frame is not None:
            if flags & ADMITTED and not self.admitted_sent:
                parts.append(self.admitted_frame)
                self.admitted_sent = True
                metrics.EVENTS["admitted"].inc()
        elif flags & POSITION and self._now - self.position_sent_at >= POSITION_GAP_S:
            position, wait = self.hub.position_of(self.rank)
            if position != self.sent_position:
                data = {"position": position, "estimated_wait_s": wait}
                parts.append(frames.event("position", data))
                metrics.EVENTS["position"].inc()
                self.sent_position, self.position_sent_at = position, self._now
        return b"".join(parts)
