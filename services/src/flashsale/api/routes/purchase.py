"""POST /v1/sales/{sale_id}/orders: the hot path. One JWT check in memory, one Redis round trip.

`place_order` is the purchase, independent of the HTTP layer. Two thin layers carry it: the FastAPI
route below (which gives /docs the body, header and answers) and api/fastlane.py, a raw ASGI lane in
front of FastAPI that a running server uses for this one route, because this route takes the crowd
and FastAPI's middleware and dependency machinery cost more than the purchase itself (README,
"Benchmarks")."""

from __future__ import annotations

import time
from dataclasses import dataclass
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
        },
        {
            "name": "Admission-Pass",
            "in": "header",
            "required": False,
            "description": (
                "Sales with a waiting room only: the `pass` POST /v1/sales/{sale_id}/queue (or the "
                "queue stream's `admitted` event) gave this user; without a valid one, 403 "
                "not_admitted."
            ),
            "schema": {"type": "string"},
        },
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


@dataclass(frozen=True, slots=True)
class Accepted:
    """A 202: the body (fresh or replayed) and the headers that go with it."""

    body: bytes
    headers: dict[str, str]


async def place_order(
    services: Services,
    *,
    sale_id: str,
    authorization: str | None,
    idempotency_key: str | None,
    raw_body: bytes,
    client_addr: str,
    admission_pass: str | None = None,
) -> Accepted:
    """The purchase, whichever HTTP layer carried it: checks in the contract's order (401, 400,
    422, then the sale), then one reserve script. Raises FlashSaleError for every refusal.
    `admission_pass` is checked here, in memory; only a sale with a waiting room asks the script
    whether there was a valid one."""
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise errors.Unauthenticated("a bearer token is required")
    principal = services.tokens.verify(token.strip())
    key = validate_idempotency_key(idempotency_key)
    qty = parse_quantity(raw_body)
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
    admitted = admission_pass is not None and services.passes.pass_valid(
        admission_pass, user_id=principal.user_id, sale_id=sale_id
    )
    try:
        reservation = await services.stock.reserve(
            sale_id=sale_id,
            user_id=principal.user_id,
            qty=qty,
            idempotency_key=key,
            fingerprint=fingerprint(sale_id=sale_id, quantity=qty),
            order_id=order_id,
            body=body,
            client_addr=client_addr,
            admitted=admitted,
        )
    except errors.StoreUnavailable as e:
        # Unlike 503 overloaded, this one cannot promise nothing was reserved: the script may have
        # run before Redis went quiet. The Idempotency-Key makes the retry safe and exact.
        raise errors.StoreUnavailable(
            "Redis did not answer, so whether a unit was reserved is unknown: retry with the same "
            "Idempotency-Key (a reserved unit is answered 202 then)"
        ) from e
    if reservation.replayed:
        order_id = orjson.loads(reservation.body)["order_id"]
        return Accepted(
            reservation.body,
            {"Location": f"/v1/orders/{order_id}", "Idempotent-Replayed": "true"},
        )
    return Accepted(reservation.body, {"Location": f"/v1/orders/{order_id}"})


async def measured(services: Services, **kwargs: Any) -> Accepted:
    """place_order, counted by outcome and timed."""
    started = time.perf_counter()
    outcome = "error"
    try:
        accepted = await place_order(services, **kwargs)
        outcome = "replayed" if "Idempotent-Replayed" in accepted.headers else "reserved"
        return accepted
    except errors.FlashSaleError as e:
        outcome = e.code
        raise
    finally:
        metrics.count_purchase(outcome, time.perf_counter() - started)


@router.post(
    "/v1/sales/{sale_id}/orders",
    status_code=202,
    response_model=PurchaseAccepted,
    summary="Reserve units of a sale (idempotent)",
    openapi_extra=OPENAPI,
    responses=problem_responses(400, 401, 403, 404, 409, 413, 422, 429, 503),
)
async def purchase(sale_id: str, request: Request) -> Response:
    """Documents the route; in a running server fastlane.PurchaseLane answers it first."""
    accepted = await measured(
        request.app.state.services,
        sale_id=sale_id,
        authorization=request.headers.get("authorization"),
        idempotency_key=request.headers.get("idempotency-key"),
        raw_body=await request.body(),
        client_addr=client_addr(request),
        admission_pass=request.headers.get("admission-pass"),
    )
    return Response(
        accepted.body, status_code=202, media_type="application/json", headers=accepted.headers
    )
