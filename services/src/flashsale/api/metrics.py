"""Prometheus metrics of the API process. With several uvicorn workers, prometheus-client's
multiprocess mode (PROMETHEUS_MULTIPROC_DIR) aggregates them; /metrics serves the sum over all
workers."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

PURCHASES = Counter(
    "flashsale_purchase_attempts_total",
    "Purchase attempts by outcome (reserved, replayed or the refusal code).",
    ["outcome"],
)
# Buckets around the targets (p50 5 ms, p95 11 ms, p99 20 ms) with room to see a bad day.
PURCHASE_SECONDS = Histogram(
    "flashsale_purchase_seconds",
    "Time to answer a purchase attempt, from request to response, in the API process.",
    buckets=(0.001, 0.002, 0.003, 0.005, 0.0075, 0.011, 0.015, 0.02, 0.03, 0.05, 0.1, 0.25, 0.5, 1),
)
REQUESTS = Counter(
    "flashsale_http_requests_total", "HTTP requests by route and status.", ["route", "status"]
)


SHED = Counter(
    "flashsale_requests_shed_total",
    "Purchases and joins answered 503 overloaded at once because too many were in flight.",
)


def count_shed() -> None:
    SHED.inc()


# Pre-bound children: .labels() takes a lock and a dict lookup on every call of the hot path.
_OUTCOMES: dict[str, Counter] = {}


def count_purchase(outcome: str, seconds: float) -> None:
    child = _OUTCOMES.get(outcome)
    if child is None:
        child = _OUTCOMES[outcome] = PURCHASES.labels(outcome)
    child.inc()
    PURCHASE_SECONDS.observe(seconds)


# --- the waiting room (docs/waiting-room.md) ------------------------------------------------------
QUEUE_JOINS = Counter(
    "flashsale_waiting_room_joins_total", "Tickets handed out by POST /queue.", ["sale_id"]
)
# Both set from the state every queue call reads (joins and polls arrive every second or so while a
# queue exists); "mostrecent" keeps the latest value across uvicorn workers.
QUEUE_LENGTH = Gauge(
    "flashsale_waiting_room_queue_length",
    "Tickets not admitted yet (joined - admitted), as of the latest queue call.",
    ["sale_id"],
    multiprocess_mode="mostrecent",
)
QUEUE_ADMITTED = Gauge(
    "flashsale_waiting_room_admitted",
    "Tickets admitted so far (deriv() of it is the admission rate), as of the latest queue call.",
    ["sale_id"],
    multiprocess_mode="mostrecent",
)
QUEUE_PASSES = Counter(
    "flashsale_waiting_room_passes_total",
    "Admissions seen first by this process (the pass's expiry is fixed from then).",
    ["sale_id"],
)
# From a few seconds (an idle queue) to an hour (a crowd many times the admission rate).
QUEUE_WAIT_SECONDS = Histogram(
    "flashsale_waiting_room_wait_seconds",
    "Time in the queue, from joining to the first sight of the admission.",
    buckets=(1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1200, 1800, 3600),
)


def count_queue_call(
    sale_id: str, *, new_ticket: bool, joined: int, admitted: int, wait_s: float | None
) -> None:
    """One join/poll: its counts, and the wait when this call saw the admission first."""
    if new_ticket:
        QUEUE_JOINS.labels(sale_id).inc()
    admitted = min(admitted, joined)
    QUEUE_LENGTH.labels(sale_id).set(joined - admitted)
    QUEUE_ADMITTED.labels(sale_id).set(admitted)
    if wait_s is not None:
        QUEUE_PASSES.labels(sale_id).inc()
        QUEUE_WAIT_SECONDS.observe(wait_s)
