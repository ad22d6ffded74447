"""The payment gateway's HTTP client: pooled httpx.AsyncClients (a few small pools, see below),
charges keyed by the order id (the Idempotency-Key), and lookups, refunds and the full charge list
for reconciliation.

A charge attempt never raises: it answers a domain `payments.GatewayAnswer` (timeouts and connection
errors included). Lookups raise `GatewayUnavailable` (a StoreUnavailable) when the gateway cannot
answer. No httpx exception leaves this module. May import domain, config and errors; no entrypoint.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from types import TracebackType
from typing import Any
from urllib.parse import quote

import httpx

from flashsale import config, errors
from flashsale.domain import payments

logger = logging.getLogger(__name__)

# The gateway's page limit (gateway/app.py LIST_MAX_LIMIT): fewest round trips for verify.
LIST_PAGE_SIZE = 1000
# Connections per httpx client. httpcore scans every connection of its pool on each request and
# each response, so one pool of 200 made the payment worker CPU-bound at ~50 charges/s (py-spy: 60 %
# in the pool's bookkeeping); 200 slots over pools of 16 cost a twelfth of that per event.
CONNECTIONS_PER_POOL = 16


# What parsing a body that is not the documented shape can raise (bad JSON, a missing field, a bad
# decimal or timestamp).
_MALFORMED = (ValueError, KeyError, TypeError, AttributeError, ArithmeticError)


class GatewayUnavailable(errors.StoreUnavailable):
    """The payment gateway did not answer (timeout, connection error, 429 or 5xx)."""

    code = "gateway_unavailable"


@dataclass(frozen=True, slots=True)
class Charge:
    """A charge as the gateway reports it."""

    charge_id: str
    order_id: str
    amount: Decimal
    currency: str
    status: str  # succeeded | refunded
    created_at: datetime
    refunded_at: datetime | None = None

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> Charge:
        refunded_at = doc.get("refunded_at")
        return cls(
            charge_id=str(doc["charge_id"]),
            order_id=str(doc["order_id"]),
            amount=Decimal(str(doc["amount"])),
            currency=str(doc["currency"]),
            status=str(doc["status"]),
            created_at=datetime.fromisoformat(str(doc["created_at"])),
            refunded_at=datetime.fromisoformat(str(refunded_at)) if refunded_at else None,
        )


@dataclass(frozen=True, slots=True)
class ListedCharge:
    """One entry of the gateway's charge list: the charge and what the gateway saw for its key."""

    charge: Charge
    attempts: int  # charge requests the gateway received for this key
    charges: int  # distinct charges it made for this key: more than 1 is a double charge


@dataclass(frozen=True, slots=True)
class ChargeAttempt:
    """What one charge request got back."""

    answer: payments.GatewayAnswer
    charge: Charge | None = None  # on 2xx
    code: str | None = None  # the problem `code` on an error answer (card_declined, rate_limited …)
    replayed: bool = False  # the gateway answered from its idempotency store

    @property
    def outcome(self) -> payments.ChargeOutcome:
        return payments.classify(self.answer)


class GatewayClient:
    """One per process: wraps a single pooled `httpx.AsyncClient` (close it with `aclose()`)."""

    def __init__(self, settings: config.GatewaySettings) -> None:
        self.settings = settings
        # One connection per charge in flight over all pools: the worker's semaphore is the real
        # bound, so no charge waits for a connection.
        pools = max(1, -(-settings.concurrency // CONNECTIONS_PER_POOL))
        per_pool = -(-settings.concurrency // pools)
        self._clients = [
            httpx.AsyncClient(
                base_url=settings.url,
                limits=httpx.Limits(max_connections=per_pool, max_keepalive_connections=per_pool),
                timeout=httpx.Timeout(settings.timeout_s),
            )
            for _ in range(pools)
        ]
        self._next = 0

    @property
    def _client(self) -> httpx.AsyncClient:
        """The pools in turn: concurrent charges spread evenly over them."""
        self._next = (self._next + 1) % len(self._clients)
        return self._clients[self._next]

    async def __aenter__(self) -> GatewayClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        for client in self._clients:
            await client.aclose()

    async def charge(self, *, order_id: str, amount: Decimal, currency: str) -> ChargeAttempt:
        """One charge attempt, keyed by the order id. Never raises: a read timeout is
        `timed_out=True` (the charge may exist), any failure to get an answer before the request was
        surely received (connect or pool timeout, connection error) is `status=None`."""
        body = {"order_id": order_id, "amount": str(amount), "currency": currency}
        try:
            response = await self._client.post(
                "/v1/charges", json=body, headers={"Idempotency-Key": order_id}
            )
        except (httpx.ConnectTimeout, httpx.PoolTimeout) as e:
            logger.debug("charge %s: not sent (%r)", order_id, e)
            return ChargeAttempt(payments.GatewayAnswer(status=None))
        except httpx.TimeoutException as e:
            logger.debug("charge %s: timed out (%r)", order_id, e)
            return ChargeAttempt(payments.GatewayAnswer(status=None, timed_out=True))
        except httpx.HTTPError as e:
            logger.debug("charge %s: no answer (%r)", order_id, e)
            return ChargeAttempt(payments.GatewayAnswer(status=None))
        return _attempt(response)

    async def get_charge(self, order_id: str) -> Charge | None:
        """The charge made for this order, or None if the gateway has none."""
        response = await self._request("GET", f"/v1/charges/{_path(order_id)}")
        return None if response.status_code == 404 else _charge(response)

    async def refund(self, order_id: str) -> Charge | None:
        """Refund the order's charge (idempotent); None if the gateway has no charge for it."""
        response = await self._request("POST", f"/v1/charges/{_path(order_id)}/refund")
        return None if response.status_code == 404 else _charge(response)

    async def list_charges(self, *, page_size: int = LIST_PAGE_SIZE) -> list[ListedCharge]:
        """Every charge the gateway holds, all pages (for `flashsale verify`)."""
        listed: list[ListedCharge] = []
        cursor: str | None = None
        while True:
            params = {"limit": str(page_size)} | ({"cursor": cursor} if cursor else {})
            response = await self._request("GET", "/v1/charges", params=params)
            try:
                page = response.json()
                listed.extend(
                    ListedCharge(
                        charge=Charge.from_doc(doc),
                        attempts=int(doc["attempts"]),
                        charges=int(doc["charges"]),
                    )
                    for doc in page["charges"]
                )
                cursor = page.get("next_cursor")
            except _MALFORMED as e:
                raise GatewayUnavailable(f"the gateway answered a malformed list: {e!r}") from e
            if not cursor:
                return listed

    async def _request(
        self, method: str, path: str, *, params: dict[str, str] | None = None
    ) -> httpx.Response:
        """A lookup that must get a real answer: 2xx or 404, else GatewayUnavailable."""
        try:
            response = await self._client.request(method, path, params=params)
        except httpx.HTTPError as e:
            raise GatewayUnavailable(f"{method} {path}: {e!r}") from e
        if response.is_success or response.status_code == 404:
            return response
        raise GatewayUnavailable(
            f"{method} {path}: HTTP {response.status_code} {_problem_code(response) or ''}".strip()
        )


def _path(key: str) -> str:
    return quote(key, safe="")


def _charge(response: httpx.Response) -> Charge:
    try:
        return Charge.from_doc(response.json())
    except _MALFORMED as e:
        raise GatewayUnavailable(f"the gateway answered a malformed charge: {e!r}") from e


def _problem_code(response: httpx.Response) -> str | None:
    try:
        doc = response.json()
    except ValueError:
        return None
    code = doc.get("code") if isinstance(doc, dict) else None
    return code if isinstance(code, str) else None


def _attempt(response: httpx.Response) -> ChargeAttempt:
    answer = payments.GatewayAnswer(
        status=response.status_code,
        retry_after_s=payments.parse_retry_after(response.headers.get("retry-after")),
    )
    replayed = response.headers.get("idempotent-replayed") == "true"
    if not response.is_success:
        return ChargeAttempt(answer, code=_problem_code(response), replayed=replayed)
    try:
        charge = Charge.from_doc(response.json())
    except _MALFORMED as e:
        # The gateway said yes; the order is paid whatever the body. The reconciler can fetch it.
        logger.warning("charge answer %s with an unreadable body: %r", response.status_code, e)
        charge = None
    return ChargeAttempt(answer, charge=charge, replayed=replayed)
