"""SSE event delay under load, timed from Python because k6 cannot: k6 hands a streaming response
over only when it ends, so it never learns when each event arrived.

A few raw asyncio clients hold the sale's event stream open and note when each `stock` event (by
its seq) arrives; one Redis subscription to the sale's channel notes when each change was
published. An event's delay is its arrival minus the publication of the change it carries: the SSE
server's whole contribution (subscription, coalescing window of 250 ms by contract, fan-out,
loopback), measured while k6 (sse.js) holds hundreds more streams and buys on the same sale."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import orjson

from flashsale.adapters import redis_keys as keys
from flashsale.adapters.redis_stock import Redis
from flashsale.local.series import percentile

# Every wait here is bounded: a stream that does not open within this is counted as failed.
CONNECT_TIMEOUT_S = 5.0


@dataclass
class ProbeResult:
    clients: int
    connected: int = 0
    published: int = 0  # changes seen on the Redis channel
    events: int = 0  # stock events received, all clients together
    delays_ms: list[float] = field(default_factory=list)

    def to_doc(self) -> dict[str, object]:
        ordered = sorted(self.delays_ms)
        return {
            "clients": self.clients,
            "connected": self.connected,
            "changes_published": self.published,
            "stock_events_received": self.events,
            "delay_ms": {
                "p50": _round(percentile(ordered, 0.50)),
                "p95": _round(percentile(ordered, 0.95)),
                "p99": _round(percentile(ordered, 0.99)),
                "max": _round(ordered[-1] if ordered else None),
            },
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


async def _listen_redis(redis: Redis, sale_id: str, published: dict[int, float]) -> None:
    pubsub = redis.pubsub()
    await pubsub.subscribe(keys.sale_events(sale_id))
    try:
        while True:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
            if message is None:
                continue
            doc = orjson.loads(message["data"])
            if isinstance(doc, dict) and "seq" in doc:
                published.setdefault(int(doc["seq"]), time.perf_counter())
    finally:
        await pubsub.aclose()  # type: ignore[no-untyped-call]


async def _listen_sse(
    url: str, sale_id: str, arrivals: list[tuple[int, float]], opened: asyncio.Event
) -> None:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection(host, port), timeout=CONNECT_TIMEOUT_S
    )
    try:
        path = f"/v1/sales/{sale_id}/events"
        writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
        event = ""
        while line := await reader.readline():
            text = line.decode(errors="replace").strip()
            if text.startswith("event:"):
                event = text[6:].strip()
                if event == "sale":
                    opened.set()
            elif text.startswith("id:") and event == "stock":
                arrivals.append((int(text[3:].strip()), time.perf_counter()))
    finally:
        writer.close()


async def probe(
    *, redis: Redis, sse_url: str, sale_id: str, clients: int, hold_s: float
) -> ProbeResult:
    """Hold `clients` streams for hold_s seconds (start it before the load, so it sees it all)."""
    published: dict[int, float] = {}
    per_client: list[list[tuple[int, float]]] = [[] for _ in range(clients)]
    opened = [asyncio.Event() for _ in range(clients)]
    tasks = [asyncio.create_task(_listen_redis(redis, sale_id, published))]
    tasks += [
        asyncio.create_task(_listen_sse(sse_url, sale_id, per_client[i], opened[i]))
        for i in range(clients)
    ]
    try:
        await asyncio.sleep(hold_s)
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, OSError, TimeoutError):
                await task
    result = ProbeResult(clients=clients, connected=sum(e.is_set() for e in opened))
    result.published = len(published)
    for arrivals in per_client:
        result.events += len(arrivals)
        for seq, arrived in arrivals:
            if seq in published:
                result.delays_ms.append((arrived - published[seq]) * 1000)
    return result
