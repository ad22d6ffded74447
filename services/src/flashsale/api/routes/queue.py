"""POST /v1/sales/{sale_id}/queue: join a sale's waiting room, or look again (the same user keeps
the same ticket), and get the admission pass once admitted. One Redis round trip (queue.lua, which
also applies the rate limits); the ticket and the pass are minted here, in memory.

Polling is the fallback for clients without EventSource: the answer's Retry-After says when a look
again is worth it (GET /v1/sales/{id}/queue/events on the SSE server pushes instead)."""

from __future__ import annotations

import math
from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from flashsale import errors
from flashsale.adapters.passes import Passes
from flashsale.api import metrics
from flashsale.api.deps import PrincipalDep, ServicesDep, client_addr
from flashsale.api.schemas import QueueTicket, problem_responses
from flashsale.domain.sales import SALE_ID_RE, from_ms, rfc3339
from flashsale.domain.waiting_room import TicketStatus

router = APIRouter(tags=["waiting room"])

# Looks again are spaced at half the estimated wait, between 1 s and 10 s: a buyer is never told to
# wait long past the admission, and a queue of 100,000 polls at most ~10,000 times a second.
POLL_MIN_S = 1
POLL_MAX_S = 10


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


@router.post(
    "/v1/sales/{sale_id}/queue",
    status_code=202,
    response_model=QueueTicket,
    response_model_exclude_none=True,
    summary="Join the sale's waiting room (idempotent per user); the pass once admitted",
    responses=problem_responses(401, 404, 409, 429, 503),
)
async def join_queue(
    sale_id: str, request: Request, services: ServicesDep, principal: PrincipalDep
) -> Response:
    if not SALE_ID_RE.fullmatch(sale_id):
        raise errors.SaleNotFound()
    user_id = principal.user_id
    status = await services.queue.join(
        sale_id=sale_id, user_id=user_id, client_addr=client_addr(request)
    )
    metrics.count_queue_call(
        sale_id,
        new_ticket=status.new_ticket,
        joined=status.joined,
        admitted=status.admitted,
        wait_s=((status.now_ms - status.joined_ms) / 1000 if status.first_admission else None),
    )
    body = ticket_body(services.passes, status, sale_id=sale_id, user_id=user_id)
    return Response(
        orjson.dumps(body),
        status_code=202,
        media_type="application/json",
        headers={"Retry-After": str(poll_after_s(status))},
    )
