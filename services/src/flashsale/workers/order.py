"""The order worker (`python -m flashsale.workers.order`): order stream -> PostgreSQL -> payment
stream.

Each batch is written in one statement (ON CONFLICT DO NOTHING on order_id), committed, handed to
the payment stream, and only then acknowledged. A crash anywhere means redelivery, and redelivery is
harmless: the insert skips rows it already has and the payment worker is idempotent on order_id."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence

from prometheus_client import Counter, Histogram

from flashsale import errors
from flashsale.adapters import redis_keys as keys
from flashsale.adapters.redis_stock import guarded
from flashsale.adapters.redis_stream import Entry, Stream
from flashsale.config import Settings
from flashsale.domain.orders import PlacedOrder
from flashsale.domain.sales import SaleDefinition
from flashsale.workers import runner
from flashsale.workers.runner import (
    Consumer,
    WorkerContext,
    install_signal_handlers,
    run_until_stopped,
    shutdown,
    startup,
)

logger = logging.getLogger(__name__)

BATCH_SIZE = Histogram(
    "flashsale_order_batch_size",
    "Orders per batch written to PostgreSQL.",
    buckets=(1, 5, 10, 25, 50, 100, 250, 500, 1000),
)
BATCH_SECONDS = Histogram(
    "flashsale_order_batch_seconds",
    "Time to write, hand off and acknowledge one batch.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
PERSISTED = Counter("flashsale_orders_persisted_total", "Order rows inserted into PostgreSQL.")
REDELIVERED = Counter(
    "flashsale_orders_redelivered_total",
    "Orders seen again after they were already written (redelivery after a crash or claim).",
)
DEAD_LETTERED = Counter(
    "flashsale_orders_dead_lettered_total",
    "Stream entries that could not be written and were moved to the dead-letter stream.",
    ["reason"],
)

DEAD_LETTER_STREAM = f"{keys.ORDER_STREAM}:dead"


async def handle_orders(
    ctx: WorkerContext, entries: Sequence[Entry], *, source: Stream, payments: Stream
) -> None:
    """Write a batch, hand it to payments, acknowledge it. Raises StoreUnavailable (nothing acked)
    when a store is down, so the whole batch is tried again."""
    started = time.perf_counter()
    orders = [e.order for e in entries if e.order is not None]
    malformed = [e for e in entries if e.order is None]
    for entry in malformed:
        await _dead_letter(ctx, entry, reason="malformed")
    try:
        inserted = await ctx.pg.insert_orders(orders)
    except errors.PermanentError:
        # Some row violates a constraint (its sale is unknown to PostgreSQL, or the database-side
        # oversell guard fired). Find which, one by one, so the rest still go through.
        orders = await _insert_one_by_one(ctx, entries)
        inserted = -1
    if inserted >= 0:
        PERSISTED.inc(inserted)
        if inserted < len(orders):
            REDELIVERED.inc(len(orders) - inserted)
    # All of them, not only the new rows: a crash after the commit and before this hand-off must not
    # leave an order unpaid. The payment worker ignores orders that are already settled.
    await payments.add_many(orders)
    await source.ack([e.entry_id for e in entries])
    # The rows exist now: GET /v1/orders no longer needs the reservation's summaries.
    await ctx.stock.forget_placed_orders([o.order_id for o in orders])
    BATCH_SIZE.observe(len(entries))
    BATCH_SECONDS.observe(time.perf_counter() - started)


async def _insert_one_by_one(ctx: WorkerContext, entries: Sequence[Entry]) -> list[PlacedOrder]:
    written: list[PlacedOrder] = []
    for entry in entries:
        order = entry.order
        if order is None:
            continue
        try:
            PERSISTED.inc(await ctx.pg.insert_orders([order]))
            written.append(order)
            continue
        except errors.PermanentError as e:
            first_error = e
        if await _restore_sale_row(ctx, order.sale_id):
            try:
                PERSISTED.inc(await ctx.pg.insert_orders([order]))
                written.append(order)
                continue
            except errors.PermanentError as e:
                first_error = e
        logger.error(
            "order %s cannot be written: %s", order.order_id, first_error.detail,
            extra={"order_id": order.order_id, "sale_id": order.sale_id},
        )  # fmt: skip
        await _dead_letter(ctx, entry, reason="constraint")
    return written


async def _restore_sale_row(ctx: WorkerContext, sale_id: str) -> bool:
    """PostgreSQL lacks the sale (its admin write failed after Redis accepted it): copy the
    definition from Redis so the orders can be written. False if Redis does not know it either."""
    try:
        sale = await ctx.stock.get_sale(sale_id)
    except errors.SaleNotFound:
        return False
    if await ctx.pg.sale_sold(sale_id) is not None:
        return False
    await ctx.pg.upsert_sale(
        SaleDefinition(
            sale_id=sale.sale_id,
            name=sale.name,
            price=sale.price,
            stock=sale.initial_stock,
            opens_at=sale.opens_at,
            closes_at=sale.closes_at,
            per_user_limit=sale.per_user_limit,
        )
    )
    logger.warning("restored the PostgreSQL row of sale %s from Redis", sale_id)
    return True


@guarded("dead letter")
async def _dead_letter(ctx: WorkerContext, entry: Entry, *, reason: str) -> None:
    """Keep an entry we cannot process where an operator can see it; never drop it silently."""
    DEAD_LETTERED.labels(reason).inc()
    fields: dict[str, str] = {**entry.fields, "reason": reason, "entry_id": entry.entry_id}
    await ctx.redis.xadd(DEAD_LETTER_STREAM, fields)  # type: ignore[arg-type]


async def run(ctx: WorkerContext) -> None:
    payments = Stream(
        ctx.redis,
        stream=keys.PAYMENT_STREAM,
        group=keys.PAYMENT_GROUP,
        consumer=ctx.consumer,
        hot=ctx.hot,
    )
    consumer = Consumer(
        ctx,
        stream=keys.ORDER_STREAM,
        group=keys.ORDER_GROUP,
        handle=lambda entries: handle_orders(
            ctx, entries, source=consumer.stream, payments=payments
        ),
        batch_size=lambda: ctx.settings.worker.batch_size,
    )
    await run_until_stopped(
        ctx,
        port=ctx.settings.worker.order_port,
        tasks=[consumer.run(), consumer.housekeeping()],
    )


async def amain(settings: Settings, *, stop: asyncio.Event | None = None) -> None:
    """Run until SIGTERM/SIGINT, or until `stop` is set when one is given (tests, embedding)."""
    ctx = await startup(settings, stop=stop)
    if stop is None:
        install_signal_handlers(ctx.stop)
    try:
        await run(ctx)
    finally:
        await shutdown(ctx)


def main() -> None:
    runner.main(amain, process_name="worker-order")


if __name__ == "__main__":
    main()
