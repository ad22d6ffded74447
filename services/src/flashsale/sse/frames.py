"""Server-Sent Events wire format: how one event becomes the bytes every client of a stream gets.

Frames are built once per change and shared by every client (bytes are immutable), so a fan-out to
10,000 clients encodes nothing 10,000 times. Pure: imports orjson and the standard library only.
"""

from __future__ import annotations

import random
from typing import Any

import orjson

# A comment line: ignored by EventSource, but it keeps proxies and NATs from closing an idle stream.
HEARTBEAT = b": hb\n\n"

# EventSource reconnects this long after a stream ends (a pod restart ends all of them at once);
# a random value in this range spreads the reconnects of thousands of clients over a few seconds
# instead of one thundering instant.
RETRY_MIN_MS = 1_000
RETRY_MAX_MS = 5_000


def event(name: str, data: dict[str, Any], *, event_id: int | None = None) -> bytes:
    """One `event:` frame; `data` is one JSON line (orjson never emits a newline)."""
    head = b"event: " + name.encode() + b"\n"
    if event_id is not None:
        head += b"id: %d\n" % event_id
    return head + b"data: " + orjson.dumps(data) + b"\n\n"


def retry_field(rng: random.Random | None = None) -> bytes:
    """The `retry:` line sent before a stream's first event (see RETRY_MIN_MS)."""
    pick = rng.randint if rng is not None else random.randint
    ms = pick(RETRY_MIN_MS, RETRY_MAX_MS)
    return b"retry: %d\n" % ms


def stock_data(*, remaining: int, state: str, seq: int) -> dict[str, Any]:
    return {"remaining": remaining, "state": state, "seq": seq}


def state_data(*, state: str, remaining: int, seq: int) -> dict[str, Any]:
    return {"state": state, "remaining": remaining, "seq": seq}


def order_frame(doc: dict[str, Any]) -> bytes:
    """An `event: order` for /v1/me/events from an order event published by settle.lua."""
    return event(
        "order",
        {
            "order_id": doc.get("order_id"),
            "sale_id": doc.get("sale_id"),
            "status": doc.get("status"),
            "failure_reason": doc.get("failure_reason"),
        },
    )


def resync_frame(reason: str) -> bytes:
    """Tells an order stream that events may have been missed, so the client re-reads its orders."""
    return event("resync", {"reason": reason})
