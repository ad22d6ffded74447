"""GET /v1/sales/{sale_id}: the public sale document."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter

from flashsale import errors
from flashsale.api.deps import RateLimit, ServicesDep
from flashsale.api.schemas import SaleOut, problem_responses
from flashsale.domain.sales import SALE_ID_RE

router = APIRouter(tags=["sales"], dependencies=[RateLimit])


@router.get(
    "/v1/sales/{sale_id}",
    response_model=SaleOut,
    response_model_exclude_none=True,  # `waiting_room` only when the sale has one
    summary="A sale with its live stock and state",
    responses=problem_responses(404, 429, 503),
)
async def get_sale(sale_id: str, services: ServicesDep) -> SaleOut:
    if not SALE_ID_RE.fullmatch(sale_id):
        raise errors.SaleNotFound()
    sale = await services.stock.get_sale(sale_id)
    return SaleOut.of(sale, now=datetime.now(UTC))
