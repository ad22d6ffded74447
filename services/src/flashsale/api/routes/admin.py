"""Admin routes (role admin): upsert, open, close and delete a sale, its unit counts and its
waiting room (for audit).

Redis decides first (its scripts refuse a stock change after orders, atomically with purchases),
then PostgreSQL records the same definition; a PUT retried after a failure converges on both."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import orjson
from fastapi import APIRouter, Response

from flashsale import errors
from flashsale.api import metrics
from flashsale.api.deps import AdminDep, RateLimit, Services, ServicesDep
from flashsale.api.schemas import QueueAdmin, SaleOut, SaleStats, SaleUpsert, problem_responses
from flashsale.domain.sales import (
    DEFAULT_DURATION,
    SALE_ID_RE,
    SaleDefinition,
    parse_price,
    validate_definition,
)

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/v1/admin/sales", tags=["admin"], dependencies=[RateLimit])

ADMIN_PROBLEMS = problem_responses(401, 403, 404, 409, 422, 429, 503)


def _sale_id(sale_id: str) -> str:
    if not SALE_ID_RE.fullmatch(sale_id):
        raise errors.SaleNotFound()
    return sale_id


def _definition(sale_id: str, body: SaleUpsert, *, now: datetime) -> SaleDefinition:
    opens_at = body.opens_at or now
    if opens_at.tzinfo is None:
        raise errors.InvalidSale("opens_at must carry a time zone (RFC 3339)")
    closes_at = body.closes_at or opens_at + DEFAULT_DURATION
    return validate_definition(
        SaleDefinition(
            sale_id=sale_id,
            name=body.name,
            price=parse_price(body.price),
            stock=body.stock,
            opens_at=opens_at,
            closes_at=closes_at,
            per_user_limit=body.per_user_limit,
            waiting_room=body.waiting_room.room() if body.waiting_room else None,
        )
    )


async def _sale_out(services: Services, sale_id: str) -> SaleOut:
    sale = await services.stock.get_sale(sale_id)
    return SaleOut.of(sale, now=datetime.now(UTC))


@router.put(
    "/{sale_id}",
    response_model=SaleOut,
    response_model_exclude_none=True,
    summary="Create or update a sale (idempotent upsert)",
    responses={201: {"model": SaleOut}, **ADMIN_PROBLEMS},
)
async def upsert_sale(
    sale_id: str, body: SaleUpsert, services: ServicesDep, admin: AdminDep
) -> Response:
    # A malformed id is a 422 here (validate_definition says what a sale id may be): PUT names a
    # sale to create, unlike the other routes, where such an id is simply not found.
    definition = _definition(sale_id, body, now=datetime.now(UTC))
    # Checked before Redis accepts the definition: a sale reborn under a deleted id would take
    # orders that PostgreSQL then refuses (the old orders hold its `sold` counter).
    if await services.pg.deleted_with_orders(sale_id):
        raise errors.SaleInProgress(
            f"sale {sale_id} was deleted and its orders keep this id; create the new sale under "
            "another id"
        )
    created = await services.stock.upsert_sale(definition)
    await services.pg.upsert_sale(definition)
    logger.info(
        "sale %s %s by %s", sale_id, "created" if created else "updated", admin.user_id,
        extra={"sale_id": sale_id, "stock": definition.stock},
    )  # fmt: skip
    out = await _sale_out(services, sale_id)
    return Response(
        orjson.dumps(out.model_dump(mode="json", exclude_none=True)),
        status_code=201 if created else 200,
        media_type="application/json",
    )


async def _move(services: Services, sale_id: str, action: str) -> SaleOut:
    await services.stock.move_window(_sale_id(sale_id), action=action)
    sale = await services.stock.get_sale(sale_id)
    await services.pg.set_window(sale_id, opens_at=sale.opens_at, closes_at=sale.closes_at)
    return SaleOut.of(sale, now=datetime.now(UTC))


@router.post(
    "/{sale_id}/open", response_model=SaleOut, response_model_exclude_none=True,
    responses=ADMIN_PROBLEMS,
)  # fmt: skip
async def open_sale(sale_id: str, services: ServicesDep, _: AdminDep) -> SaleOut:
    """Open now: moves opens_at to now if it is later. Idempotent."""
    return await _move(services, sale_id, "open")


@router.post(
    "/{sale_id}/close", response_model=SaleOut, response_model_exclude_none=True,
    responses=ADMIN_PROBLEMS,
)  # fmt: skip
async def close_sale(sale_id: str, services: ServicesDep, _: AdminDep) -> SaleOut:
    """Close now: moves closes_at to now. Idempotent."""
    return await _move(services, sale_id, "close")


@router.delete("/{sale_id}", status_code=204, responses=ADMIN_PROBLEMS)
async def delete_sale(sale_id: str, services: ServicesDep, admin: AdminDep) -> Response:
    """Close the sale and free its Redis keys once none of its orders is pending (at once if none
    is; else when the last one settles). Orders stay in PostgreSQL."""
    purged = await services.stock.delete_sale(_sale_id(sale_id))
    await services.pg.mark_sale_deleted(sale_id)
    logger.info("sale %s deleted by %s (keys freed: %s)", sale_id, admin.user_id, purged)
    return Response(status_code=204)


@router.get("/{sale_id}/stats", response_model=SaleStats, responses=ADMIN_PROBLEMS)
async def sale_stats(sale_id: str, services: ServicesDep, _: AdminDep) -> SaleStats:
    """Units per order status, counted atomically with every reservation and settlement."""
    c = await services.stock.counters(_sale_id(sale_id))
    return SaleStats(
        initial_stock=c.initial_stock,
        remaining=c.remaining,
        pending=c.pending,
        confirmed=c.confirmed,
        failed=c.failed,
        needs_reconciliation=c.needs_reconciliation,
    )


@router.get("/{sale_id}/queue", response_model=QueueAdmin, responses=ADMIN_PROBLEMS)
async def read_queue(sale_id: str, services: ServicesDep, _: AdminDep) -> QueueAdmin:
    """The waiting room for audit: its mode and seed (the random order is the seed's permutation,
    docs/waiting-room.md), tickets handed out and admitted, and the schedule's state. 409
    waiting_room_disabled when the sale has none."""
    room = await services.queue.state(_sale_id(sale_id))
    metrics.QUEUE_LENGTH.labels(sale_id).set(room.waiting)
    metrics.QUEUE_ADMITTED.labels(sale_id).set(room.admitted)
    return QueueAdmin(
        mode=room.mode.value,
        seed=room.seed,
        joined=room.joined,
        admitted=room.admitted,
        paused=room.schedule.paused,
        rate=room.schedule.rate,
        drawn=room.drawn,
    )
