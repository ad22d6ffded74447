"""POST /v1/sales/{sale_id}/queue: join a sale's waiting room, or look again (the same user keeps
the same ticket), and get the admission pass once admitted. One Redis round trip (queue.lua, which
also applies the rate limits); the ticket and the pass are minted here, in memory.

`join_queue` is the join, independent of the HTTP layer: with a waiting room on, the whole crowd
joins and looks again here, so api/fastlane.py answers this route too, before FastAPI; the FastAPI
route below documents it. Polling is the fallback for clients without EventSource: the answer's
Retry-After says when a look again is worth it (GET /v1/sales/{id}/queue/events on the SSE server
pushes instead)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from flashsale import errors
from flashsale.adapters.passes import Passes
from flashsale.api import metrics
from flashsale.api.deps import Services, client_addr
from flashsale.api.schemas import QueueTicket, problem_responses
from flashsale.domain.sales import SALE_ID_RE, from_ms, rfc3339
from flashsale.domain.waiting_room import TicketStatus

router = APIRouter(tags=["waiting room"])

# Looks again are spaced at half the estimated wait, between 1 s and 30 s: the last looks come close
# to the admission (halving), and a queue of 100,000 polls ~3,300 times a second, not ~10,000 (a
# 10 s cap; measured: ~0.4 ms of API CPU per look). Late looks cost the buyer no session time (the
# pass's expiry counts from its first sight), and the queue stream pushes instead of polling.
POLL_MIN_S = 1
POLL_MAX_S = 30


def ticket_body(
    passes: Passes, status: TicketStatus, *, sale_id: str, user_id: str
) -> dict[str, Any]:
    """The 202 body: ticket, position and wait, and the pass once admitted."""
    body: dict[str, Any] = {
        "ticket": passes.mint_ticket(
            user_id=user_id, sale_id=sale_id, seq=status.seq, joined_ms=status.joined_ms
        ),
        "position": status.position,
        "estimated_wait_s": status.estimated_wait_s,
    }
    expires_s = status.pass_expiry_s()
    if expires_s is not None:
        body["pass"] = passes.mint_pass(user_id=user_id, sale_id=sale_id, expires_at_s=expires_s)
        body["expires_at"] = rfc3339(from_ms(expires_s * 1000))
    return body


def poll_after_s(status: TicketStatus) -> int:
    if status.is_admitted:
        return POLL_MAX_S
    wait = status.estimated_wait_s
    if wait is None:  # a random pre-queue: nothing moves before the draw at the opening
        wait = math.ceil(max(0, status.opens_ms - status.now_ms) / 1000)
    return min(POLL_MAX_S, max(POLL_MIN_S, math.ceil(wait / 2)))


@dataclass(frozen=True, slots=True)
class Joined:
    """A 202 of POST /queue: the body and its headers."""

    body: bytes
    headers: dict[str, str]


async def join_queue(
    services: Services, *, sale_id: str, authorization: str | None, client_addr: str
) -> Joined:
    """The join, whichever HTTP layer carried it: 401, then the sale, then queue.lua (rate limits
    first). Raises FlashSaleError for every refusal."""
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise errors.Unauthenticated("a bearer token is required")
    user_id = services.tokens.verify(token.strip()).user_id
    if not SALE_ID_RE.fullmatch(sale_id):
        raise errors.SaleNotFound()
    status = await services.queue.join(sale_id=sale_id, user_id=user_id, client_addr=client_addr)
    metrics.count_queue_call(
        sale_id,
        new_ticket=status.new_ticket,
        joined=status.joined,
        admitted=status.admitted,
        wait_s=((status.now_ms - status.joined_ms) / 1000 if status.first_admission else None),
    )
    body = ticket_body(services.passes, status, sale_id=sale_id, user_id=user_id)
    return Joined(orjson.dumps(body), {"Retry-After": str(poll_after_s(status))})


@router.post(
    "/v1/sales/{sale_id}/queue",
    status_code=202,
    response_model=QueueTicket,
    response_model_exclude_none=True,
    summary="Join the sale's waiting room (idempotent per user); the pass once admitted",
    openapi_extra={"security": [{"HTTPBearer": []}]},
    responses=problem_responses(401, 404, 409, 429, 503),
)
async def join(sale_id: str, request: Request) -> Response:
    """Documents the route; in a running server fastlane.PurchaseLane answers it first."""
    joined = await join_queue(
        request.app.state.services,
        sale_id=sale_id,
        authorization=request.headers.get("authorization"),
        client_addr=client_addr(request),
    )
    return Response(
        joined.body, status_code=202, media_type="application/json", headers=joined.headers
    )
