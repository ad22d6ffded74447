"""Orders: one order (owner or admin) and the caller's own orders, newest first."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from flashsale import errors
from flashsale.api.deps import PrincipalDep, RateLimit, ServicesDep
from flashsale.api.schemas import OrderOut, OrderPage, problem_responses
from flashsale.domain.orders import Order, OrderStatus

router = APIRouter(tags=["orders"], dependencies=[RateLimit])


@router.get(
    "/v1/orders/{order_id}",
    response_model=OrderOut,
    summary="One order (its owner or an admin)",
    responses=problem_responses(401, 404, 429, 503),
)
async def get_order(order_id: str, services: ServicesDep, principal: PrincipalDep) -> OrderOut:
    order = await services.pg.get_order(order_id)
    if order is None:
        # Accepted a moment ago and still in the queue: the reservation left a summary in Redis.
        placed = await services.stock.placed_order(order_id) if len(order_id) <= 64 else None
        if placed is not None:
            order = Order(
                order_id=placed.order_id,
                sale_id=placed.sale_id,
                user_id=placed.user_id,
                quantity=placed.quantity,
                unit_price=placed.unit_price,
                status=OrderStatus.PENDING,
                failure_reason=None,
                created_at=placed.created_at,
                updated_at=placed.created_at,
            )
    if order is None or (order.user_id != principal.user_id and not principal.is_admin):
        raise errors.OrderNotFound()
    return OrderOut.of(order)


@router.get(
    "/v1/me/orders",
    response_model=OrderPage,
    summary="The caller's orders, newest first",
    responses=problem_responses(401, 422, 429, 503),
)
async def my_orders(
    services: ServicesDep,
    principal: PrincipalDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> OrderPage:
    try:
        orders, next_cursor = await services.pg.user_orders(
            principal.user_id, limit=limit, cursor=cursor
        )
    except ValueError as e:
        raise errors.InvalidRequest("cursor is not one this API returned") from e
    return OrderPage(orders=[OrderOut.of(o) for o in orders], next_cursor=next_cursor)
