"""GET /v1/admin/dashboard/events (admin): the operations dashboard's data as Server-Sent Events.

Once a second: read every live metrics beacon (adapters/beacon.py: each api worker, SSE server,
worker and gateway process writes its own numbers to Redis), aggregate them (counters summed into
rates, histogram buckets merged into percentiles, gauges summed or maxed) and add per-sale figures
from the sale hashes; send it as one `event: metrics`. Works the same on a laptop and with many
replicas, with no Prometheus server. The bearer token may come as `?access_token=`, since a
browser's EventSource cannot set headers; the stream ends when the token expires.

Costs per open dashboard: one ZRANGEBYSCORE + MGET and two reads per shown sale, a second."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Query
from starlette.responses import StreamingResponse

from flashsale import errors
from flashsale.adapters import beacon
from flashsale.adapters.tokens import Principal
from flashsale.api.deps import Credentials, RateLimit, Services, ServicesDep
from flashsale.api.schemas import problem_responses
from flashsale.domain.sales import SALE_ID_RE, SaleSnapshot, SaleState

router = APIRouter(tags=["admin"], dependencies=[RateLimit])

TICK_S = 1.0
# The sale list is re-read every 10 s; its figures every tick.
SALES_REFRESH_S = 10.0
# Sales shown when none is named: the ones on sale now first, then the latest to open.
MAX_SALES = 8
QUANTILES = (0.5, 0.95, 0.99)
# An EventSource reconnects this long after the stream ends (token expiry, a restart).
RETRY_MS = 2000
HEADERS = {
    "Cache-Control": "no-cache, no-transform",
    # ingress-nginx would otherwise buffer the stream; works without the chart's annotation.
    "X-Accel-Buffering": "no",
}
_ORDER = {SaleState.OPEN: 0, SaleState.SOLD_OUT: 1, SaleState.SCHEDULED: 2, SaleState.CLOSED: 3}


def dashboard_admin(
    services: ServicesDep,
    credentials: Credentials,
    access_token: Annotated[str | None, Query(max_length=4096)] = None,
) -> Principal:
    """An admin from `Authorization: Bearer` or `?access_token=` (401 / 403 otherwise)."""
    token = credentials.credentials if credentials is not None else access_token
    if not token:
        raise errors.Unauthenticated("a bearer token is required")
    principal = services.tokens.verify(token)
    if not principal.is_admin:
        raise errors.Forbidden("the dashboard needs a token with role admin")
    return principal


AdminDep = Annotated[Principal, Depends(dashboard_admin)]


@router.get(
    "/v1/admin/dashboard/events",
    summary="Aggregated live metrics of every process, one `metrics` event a second (SSE)",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"text/event-stream": {}}},
        **problem_responses(401, 403, 404, 429),
    },
)
async def dashboard_events(
    services: ServicesDep,
    principal: AdminDep,
    sale: Annotated[str | None, Query(max_length=63)] = None,
) -> StreamingResponse:
    """`sale` narrows the per-sale figures to one sale; without it the busiest few are shown."""
    if sale is not None and not SALE_ID_RE.fullmatch(sale):
        raise errors.SaleNotFound()
    expires_at = principal.expires_at + services.settings.auth.leeway_s
    return StreamingResponse(
        _stream(services, focus=sale, expires_at=expires_at),
        media_type="text/event-stream",
        headers=HEADERS,
    )


async def _stream(
    services: Services, *, focus: str | None, expires_at: float
) -> AsyncIterator[bytes]:
    yield b"retry: %d\n\n" % RETRY_MS
    aggregator = beacon.Aggregator()
    shown: list[str] = [focus] if focus else []
    next_list = 0.0
    loop = asyncio.get_running_loop()
    while time.time() < expires_at:
        started = loop.time()
        error = None
        try:
            aggregator.update(await beacon.read_live(services.stock.client))
            if focus is None and started >= next_list:
                shown = await _busiest_sales(services)
                next_list = started + SALES_REFRESH_S
            sales = await _sale_figures(services, shown)
        except errors.StoreUnavailable:
            error, sales = "redis unavailable", []
        doc = metrics_document(aggregator, sales=sales, focus=focus, error=error)
        yield b"event: metrics\ndata: " + orjson.dumps(doc) + b"\n\n"
        await asyncio.sleep(max(0.0, TICK_S - (loop.time() - started)))
    yield b'event: end\ndata: {"reason":"token_expired"}\n\n'


async def _busiest_sales(services: Services) -> list[str]:
    ids = sorted(await services.stock.live_sale_ids())[: MAX_SALES * 25]
    found = await asyncio.gather(*(services.stock.get_sale(i) for i in ids), return_exceptions=True)
    sales = [s for s in found if isinstance(s, SaleSnapshot)]
    now = datetime.now(UTC)
    sales.sort(key=lambda s: (_ORDER[s.state(now)], -s.opens_at.timestamp()))
    return [s.sale_id for s in sales[:MAX_SALES]]


async def _sale_figures(services: Services, sale_ids: list[str]) -> list[dict[str, Any]]:
    async def one(sale_id: str) -> dict[str, Any] | None:
        try:
            snapshot, counters = await asyncio.gather(
                services.stock.get_sale(sale_id), services.stock.counters(sale_id)
            )
        except errors.SaleNotFound:
            return None
        return {
            "sale_id": sale_id,
            "name": snapshot.name,
            "state": snapshot.state(datetime.now(UTC)).value,
            "initial_stock": counters.initial_stock,
            "remaining": counters.remaining,
            "pending": counters.pending,
            "confirmed": counters.confirmed,
            "failed": counters.failed,
            "needs_reconciliation": counters.needs_reconciliation,
        }

    figures = await asyncio.gather(*(one(i) for i in sale_ids))
    return [f for f in figures if f is not None]


def metrics_document(
    aggregator: beacon.Aggregator,
    *,
    sales: list[dict[str, Any]],
    focus: str | None,
    error: str | None,
) -> dict[str, Any]:
    """One `metrics` event: what the dashboard draws, already aggregated over every process."""
    quantiles = aggregator.quantiles("flashsale_purchase_seconds", QUANTILES)
    ack_ms = {
        f"p{round(q * 100)}": (None if v is None else round(v * 1000, 3))
        for q, v in quantiles.items()
    }
    return {
        "t": time.time(),
        "processes": aggregator.processes(),
        "purchases": _rounded(aggregator.rates("flashsale_purchase_attempts", by="outcome")),
        "ack_ms": ack_ms,
        # Every consumer reports its group's lag: the maximum, not the sum, is the group's.
        "queue_lag": aggregator.gauges("flashsale_queue_lag", by="group", how="max"),
        "queue_pending": aggregator.gauges("flashsale_queue_pending", by="group", how="max"),
        "payments": _rounded(aggregator.rates("flashsale_payment_attempts", by="outcome")),
        "settled": _rounded(aggregator.rates("flashsale_orders_settled", by="status")),
        "sse_clients": aggregator.gauges("flashsale_sse_clients", by="stream"),
        "sales": sales,
        "focus": focus,
        "error": error,
    }


def _rounded(values: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 2) for k, v in sorted(values.items())}
