"""Prometheus metrics of the SSE process: clients connected, events written, stock updates folded
away by coalescing, fan-out delay, connections refused and Redis reconnects. Imports only
prometheus_client; every other sse module counts through these objects."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

CLIENTS = Gauge(
    "flashsale_sse_clients",
    "Connected SSE clients by stream kind (sale = /v1/sales/{id}/events, me = /v1/me/events, "
    "queue = /v1/sales/{id}/queue/events).",
    ["stream"],
    multiprocess_mode="livesum",
)
_EVENTS = Counter(
    "flashsale_sse_events_total",
    "Events written to clients, by event type (heartbeat counts the comment lines).",
    ["type"],
)
# Children bound once: labels() on every write would cost a dict lookup and a lock per client.
EVENTS = {
    name: _EVENTS.labels(name)
    for name in (
        *("sale", "stock", "state", "deleted", "order", "resync", "heartbeat"),
        *("position", "admitted", "sold_out", "closed", "waiting_room_disabled"),  # queue stream
    )
}
COALESCED = Counter(
    "flashsale_sse_coalesced_updates_total",
    "Stock updates of a sale superseded by a later one within the coalescing window (once per "
    "sale, not per client).",
)
# From an event being ready in this process (the Redis message read, or the end of its coalescing
# window) to its write to one client. Buckets from 1 ms to the reference system's 154 ms p50 and
# beyond, where a 10k-client fan-out lands.
FANOUT_SECONDS = Histogram(
    "flashsale_sse_fanout_seconds",
    "Delay from an event being ready to send in this process to its write to one client.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5),
)
REFUSED = Counter(
    "flashsale_sse_refused_total",
    "Stream requests refused, by reason (process_full, address_full).",
    ["reason"],
)
REDIS_RECONNECTS = Counter(
    "flashsale_sse_redis_reconnects_total",
    "Times the pub/sub subscription was lost and re-established.",
)
REDIS_CONNECTED = Gauge(
    "flashsale_sse_redis_subscribed",
    "1 while the process's pub/sub subscription is live, 0 while it reconnects.",
    multiprocess_mode="livemax",
)
QUEUE_PASSES = Counter(
    "flashsale_sse_waiting_room_passes_total",
    "Admissions this process saw first and announced with an `admitted` event (its pass).",
)
# As the API's flashsale_waiting_room_wait_seconds: whichever process sees an admission first
# observes its wait, so the two histograms together count every admitted ticket once.
QUEUE_WAIT_SECONDS = Histogram(
    "flashsale_sse_waiting_room_wait_seconds",
    "Time in the queue, from joining to the first sight of the admission.",
    buckets=(1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1200, 1800, 3600),
)
