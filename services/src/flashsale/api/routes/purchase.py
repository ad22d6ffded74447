"""POST /v1/sales/{sale_id}/orders: the hot path. One JWT check in memory, one Redis round trip.

Parsed by hand rather than through FastAPI's body and dependency machinery: this route takes the
crowd, and every microsecond here is a purchase attempt per second less (README, "Benchmarks"). Its
OpenAPI description is given explicitly below so /docs still shows the body, the header and the
answers."""

from __future__ import annotations

import time
from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from flashsale import errors
from flashsale.api import metrics
from flashsale.api.deps import Services, client_addr
from flashsale.api.schemas import PurchaseAccepted, PurchaseRequest, problem_responses
from flashsale.domain.ids import uuid7
from flashsale.domain.purchase import MAX_QUANTITY, fingerprint, validate_idempotency_key
from flashsale.domain.sales import SALE_ID_RE

router = APIRouter(tags=["purchase"])

OPENAPI: dict[str, Any] = {
    "parameters": [
        {
            "name": "Idempotency-Key",
            "in": "header",
            "required": True,
            "description": "1-255 visible ASCII characters; a replay returns the first answer.",
            "schema": {"type": "string", "minLength": 1, "maxLength": 255},
        }
    ],
    "requestBody": {
        "required": False,
        "content": {"application/json": {"schema": PurchaseRequest.model_json_schema()}},
    },
    "security": [{"HTTPBearer": []}],
}


def parse_quantity(raw: bytes) -> int:
    """`{}`, an empty body and `{"quantity": 1}` all mean one unit; anything else must be exactly
    `{"quantity": n}` with 1 <= n <= MAX_QUANTITY."""
    if not raw.strip():
        return 1
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise errors.InvalidRequest(f"the body is not valid JSON: {e}") from e
    if not isinstance(doc, dict):
        raise errors.InvalidRequest("the body must be a JSON object")
    unknown = set(doc) - {"quantity"}
    if unknown:
        raise errors.InvalidRequest(f"unknown fields: {', '.join(sorted(unknown))}")
    qty = doc.get("quantity", 1)
    if type(qty) is not int or not 1 <= qty <= MAX_QUANTITY:
        raise errors.InvalidRequest(f"quantity must be an integer from 1 to {MAX_QUANTITY}")
    return qty


@router.post(
    "/v1/sales/{sale_id}/orders",
    status_code=202,
    response_model=PurchaseAccepted,
    summary="Reserve units of a sale (idempotent)",
    openapi_extra=OPENAPI,
    responses=problem_responses(400, 401, 404, 409, 413, 422, 429, 503),
)
async def purchase(sale_id: str, request: Request) -> Response:
    started = time.perf_counter()
    outcome = "error"
    try:
        response = await _purchase(sale_id, request)
        outcome = "replayed" if "idempotent-replayed" in response.headers else "reserved"
        return response
    except errors.FlashSaleError as e:
        outcome = e.code
        raise
    finally:
        metrics.PURCHASES.labels(outcome).inc()
        metrics.PURCHASE_SECONDS.observe(time.perf_counter() - started)


async def _purchase(sale_id: str, request: Request) -> Response:
    services: Services = request.app.state.services
    authorization = request.headers.get("authorization", "")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise errors.Unauthenticated("a bearer token is required")
    principal = services.tokens.verify(token.strip())
    key = validate_idempotency_key(request.headers.get("idempotency-key"))
    qty = parse_quantity(await request.body())
    if not SALE_ID_RE.fullmatch(sale_id):
        raise errors.SaleNotFound()
    order_id = str(uuid7())
    body = orjson.dumps(
        {
            "order_id": order_id,
            "sale_id": sale_id,
            "user_id": principal.user_id,
            "quantity": qty,
            "status": "pending",
        }
    )
    reservation = await services.stock.reserve(
        sale_id=sale_id,
        user_id=principal.user_id,
        qty=qty,
        idempotency_key=key,
        fingerprint=fingerprint(sale_id=sale_id, quantity=qty),
        order_id=order_id,
        body=body,
        client_addr=client_addr(request),
    )
    headers = {}
    if reservation.replayed:
        order_id = orjson.loads(reservation.body)["order_id"]
        headers["Idempotent-Replayed"] = "true"
    headers["Location"] = f"/v1/orders/{order_id}"
    return Response(
        reservation.body, status_code=202, media_type="application/json", headers=headers
    )
