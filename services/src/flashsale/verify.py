"""`flashsale verify SALE_ID`: gather the facts of one sale from Redis, PostgreSQL and the payment
gateway, and let domain.invariants judge them (CONTRACT.md invariants 1-4).

The facts come from three independent places on purpose: Redis's remaining stock and the 202 answers
it stored, PostgreSQL's order rows, and the gateway's own record of charges.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass

from flashsale import errors
from flashsale.adapters import pg
from flashsale.adapters import redis_keys as keys
from flashsale.adapters.gateway_http import GatewayClient
from flashsale.adapters.redis_stock import RedisStock, connect
from flashsale.adapters.redis_stream import Stream
from flashsale.config import Settings
from flashsale.domain.invariants import ChargeFact, OrderFact, SaleFacts, Verdict, judge


@dataclass(frozen=True)
class Quiet:
    """What is still moving: entries waiting in the two streams, orders still being paid."""

    queued_orders: int
    queued_payments: int
    pending_units: int
    reconciling_units: int

    @property
    def quiescent(self) -> bool:
        return not (self.queued_orders or self.queued_payments or self.pending_units
                    or self.reconciling_units)  # fmt: skip


async def _queue_depth(stock: RedisStock, stream: str, group: str) -> int:
    info = await Stream(stock.client, stream=stream, group=group, consumer="verify").info()
    return info.lag + info.pending


async def quiet_state(stock: RedisStock, sale_id: str) -> Quiet:
    counters = await stock.counters(sale_id)
    return Quiet(
        queued_orders=await _queue_depth(stock, keys.ORDER_STREAM, keys.ORDER_GROUP),
        queued_payments=await _queue_depth(stock, keys.PAYMENT_STREAM, keys.PAYMENT_GROUP),
        pending_units=counters.pending,
        reconciling_units=counters.needs_reconciliation,
    )


async def wait_quiescent(
    stock: RedisStock, sale_id: str, *, timeout_s: float, poll_s: float = 0.2
) -> Quiet:
    """Poll until nothing of the sale is queued or unsettled, or the timeout passes."""
    deadline = time.monotonic() + timeout_s
    while True:
        state = await quiet_state(stock, sale_id)
        if state.quiescent or time.monotonic() >= deadline:
            return state
        await asyncio.sleep(poll_s)


async def gather(
    settings: Settings, sale_id: str, *, wait_s: float = 0.0
) -> tuple[SaleFacts, Quiet]:
    redis = connect(settings.redis)
    pool = await pg.create_pool(settings.postgres.model_copy(update={"pool_min": 0, "pool_max": 2}))
    try:
        stock = RedisStock(redis, api=settings.api)
        quiet = await wait_quiescent(stock, sale_id, timeout_s=wait_s)
        sale = await stock.get_sale(sale_id)
        store = pg.PgStore(pool)
        orders = await store.sale_orders(sale_id)
        acked = await stock.acknowledged_order_ids(sale_id)
        charges = await _charges(settings, store, sale_order_ids={o.order_id for o in orders})
        facts = SaleFacts(
            sale_id=sale_id,
            initial_stock=sale.initial_stock,
            per_user_limit=sale.per_user_limit,
            remaining=sale.remaining,
            orders=[OrderFact(o.order_id, o.user_id, o.quantity, o.status.value) for o in orders],
            acknowledged_order_ids=acked,
            charges=charges,
            queued=quiet.queued_orders,
        )
        return facts, quiet
    finally:
        await pool.close()
        await redis.aclose()


async def _charges(
    settings: Settings, store: pg.PgStore, *, sale_order_ids: set[str]
) -> list[ChargeFact] | None:
    """This sale's charges, plus every charge whose order exists nowhere (an orphan is a defect
    whichever sale it was meant for). None when the gateway cannot be asked."""
    try:
        async with GatewayClient(settings.gateway) as gateway:
            listed = await gateway.list_charges()
    except errors.StoreUnavailable:
        return None
    unknown = [c.charge.order_id for c in listed if c.charge.order_id not in sale_order_ids]
    known_elsewhere = await store.existing_order_ids(_uuids_only(unknown)) if unknown else set()
    facts = []
    for c in listed:
        order_id = c.charge.order_id
        if order_id in sale_order_ids or order_id not in known_elsewhere:
            facts.append(ChargeFact(order_id=order_id, status=c.charge.status, charges=c.charges))
    return facts


def _uuids_only(values: list[str]) -> list[str]:
    out = []
    for value in values:
        try:
            out.append(str(uuid.UUID(value)))
        except ValueError:
            continue
    return out


async def verify(settings: Settings, sale_id: str, *, wait_s: float = 0.0) -> tuple[Verdict, Quiet]:
    facts, quiet = await gather(settings, sale_id, wait_s=wait_s)
    return judge(facts), quiet
