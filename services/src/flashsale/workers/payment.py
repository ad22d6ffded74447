"""The payment worker (`python -m flashsale.workers.payment`): charges the gateway for each order,
many at once, and settles it; a reconciler settles what the gateway never answered for, and a sweep
refunds charges that landed after their order was already given up.

Outcomes: 2xx -> confirmed; 402 -> failed and the unit goes back to stock; 429/503/connection error/
timeout -> retried with the same Idempotency-Key (the order id), capped exponential backoff with
jitter and Retry-After as a floor; retries exhausted -> needs_reconciliation. PostgreSQL moves first
(a conditional update), then Redis (settle.lua, applied once); a redelivered message repeats both
harmlessly."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from prometheus_client import Counter, Gauge, Histogram

from flashsale import errors
from flashsale.adapters import redis_keys as keys
from flashsale.adapters.gateway_http import ChargeAttempt, GatewayClient
from flashsale.adapters.redis_stock import guarded
from flashsale.adapters.redis_stream import Entry, Stream
from flashsale.config import Settings
from flashsale.domain.orders import FailureReason, Order, OrderStatus, PlacedOrder
from flashsale.domain.payments import ChargeOutcome, backoff_delay
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

ATTEMPTS = Counter(
    "flashsale_payment_attempts_total",
    "Charge requests sent to the gateway, by outcome.",
    ["outcome"],
)
SETTLED = Counter(
    "flashsale_orders_settled_total", "Orders moved to a new status, by status.", ["status"]
)
CHARGE_SECONDS = Histogram(
    "flashsale_payment_charge_seconds",
    "Gateway latency of one charge request (timeouts count at the timeout).",
    buckets=(0.05, 0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 3, 4, 6, 10),
)
ORDER_PAYMENT_SECONDS = Histogram(
    "flashsale_order_payment_seconds",
    "From reservation to a final or needs_reconciliation status.",
    buckets=(0.25, 0.5, 1, 2, 3, 4, 5, 7.5, 10, 15, 30, 60),
)
IN_FLIGHT = Gauge("flashsale_payments_in_flight", "Orders being charged by this process.")
RECONCILED = Counter(
    "flashsale_reconciled_total", "Orders the reconciler settled, by resulting status.", ["status"]
)
REFUNDS = Counter(
    "flashsale_refunds_total", "Charges refunded because their order had already failed."
)
RECONCILER_LEADER = Gauge(
    "flashsale_reconciler_leader", "1 while this process holds the reconciler lease."
)

# How long a reconciler lease lasts; renewed every interval, so a dead leader is replaced within it.
LEASE_MS = 10_000
# The refund sweep looks back this far for orders given up as payment_unresolved (a charge that
# lands later than this after the give-up would need an operator; the gateway timeout is seconds).
REFUND_LOOKBACK_S = 3600.0
RECONCILE_BATCH = 100
# A given-up order is asked about again at most this often: a late charge lands within seconds of
# its request, and asking every pass would cost up to 200 gateway calls a second.
REFUND_RECHECK_S = 30.0
# How often the leader looks for settlements Redis missed: a repair, not part of every pass (each
# look costs a count of the sale's orders in PostgreSQL while some are in reconciliation).
CATCH_UP_EVERY_S = 5.0


@dataclass(frozen=True)
class PaymentContext:
    """The payment worker's extra clients on top of the shared worker context."""

    base: WorkerContext
    gateway: GatewayClient
    slots: asyncio.Semaphore
    rng: random.Random
    running: set[asyncio.Task[None]] = field(default_factory=set)


async def settle(
    ctx: WorkerContext,
    order: PlacedOrder | Order,
    *,
    status: OrderStatus,
    failure_reason: str | None = None,
    charge_id: str | None = None,
) -> OrderStatus | None:
    """Move an order to `status` in PostgreSQL (only from a state it may move from), then apply the
    status PostgreSQL ended with to the Redis counters (settle.lua is a no-op the second time).
    Returns the order's status afterwards, None if PostgreSQL has no such order."""
    result = await ctx.pg.transition(
        order.order_id, status=status, failure_reason=failure_reason, charge_id=charge_id
    )
    if result is None:
        return None
    final = result.order
    if result.applied:
        SETTLED.labels(final.status.value).inc()
        logger.info(
            "order %s %s", final.order_id, final.status.value,
            extra={"order_id": final.order_id, "status": final.status.value,
                   "failure_reason": final.failure_reason},
        )  # fmt: skip
    if final.status is not OrderStatus.PENDING:
        await ctx.stock.settle(
            sale_id=final.sale_id,
            order_id=final.order_id,
            user_id=final.user_id,
            qty=final.quantity,
            status=final.status,
            failure_reason=final.failure_reason,
        )
    return final.status


async def charge_with_retries(pctx: PaymentContext, order: PlacedOrder | Order) -> ChargeAttempt:
    """Charge until the gateway gives a definite answer or the attempts run out. Every attempt uses
    the order id as Idempotency-Key, so a retry after a timeout can never charge twice."""
    settings = pctx.base.settings.gateway
    attempt_no = 0
    while True:
        attempt_no += 1
        started = time.perf_counter()
        attempt = await pctx.gateway.charge(
            order_id=order.order_id, amount=order.amount, currency=settings.currency
        )
        elapsed = time.perf_counter() - started
        outcome = attempt.outcome
        ATTEMPTS.labels(outcome.value).inc()
        CHARGE_SECONDS.observe(elapsed)
        await pctx.base.pg.record_attempt(
            order.order_id,
            attempt=attempt_no,
            outcome=attempt.code or outcome.value,
            http_status=attempt.answer.status,
            latency_ms=int(elapsed * 1000),
        )
        if outcome not in (ChargeOutcome.RETRY, ChargeOutcome.UNKNOWN):
            return attempt
        if attempt_no >= settings.max_attempts or pctx.base.stop.is_set():
            return attempt
        delay = backoff_delay(
            attempt_no,
            base_s=settings.backoff_base_s,
            cap_s=settings.backoff_cap_s,
            retry_after_s=attempt.answer.retry_after_s,
            retry_after_cap_s=settings.max_retry_after_s,
            rng=pctx.rng,
        )
        await asyncio.sleep(delay)


async def apply_charge_result(
    ctx: WorkerContext, order: PlacedOrder | Order, attempt: ChargeAttempt
) -> OrderStatus | None:
    outcome = attempt.outcome
    if outcome is ChargeOutcome.SUCCEEDED:
        charge_id = attempt.charge.charge_id if attempt.charge else None
        return await settle(ctx, order, status=OrderStatus.CONFIRMED, charge_id=charge_id)
    if outcome is ChargeOutcome.DECLINED:
        return await settle(
            ctx, order, status=OrderStatus.FAILED, failure_reason=FailureReason.CARD_DECLINED
        )
    if outcome is ChargeOutcome.INVALID:
        logger.error(
            "gateway refused order %s as invalid (%s)", order.order_id, attempt.code,
            extra={"order_id": order.order_id},
        )  # fmt: skip
        return await settle(
            ctx, order, status=OrderStatus.FAILED, failure_reason=FailureReason.INVALID_ORDER
        )
    # Still no definite answer: the reconciler takes it from here.
    return await settle(ctx, order, status=OrderStatus.NEEDS_RECONCILIATION)


async def handle_payment(pctx: PaymentContext, order: PlacedOrder) -> bool:
    """Charge one order and settle it. Returns True when the message may be acknowledged."""
    ctx = pctx.base
    current = await ctx.pg.get_order(order.order_id)
    if current is None:
        # The order worker hands an order over only after its commit; a missing row means PostgreSQL
        # was restored from an older backup. Keep the message for an operator rather than charge.
        logger.error("payment for unknown order %s", order.order_id)
        return False
    if current.status is not OrderStatus.PENDING:
        # A redelivery: PostgreSQL already moved it. Make sure Redis agrees, then we are done.
        await settle(ctx, current, status=current.status)
        return True
    attempt = await charge_with_retries(pctx, current)
    status = await apply_charge_result(ctx, current, attempt)
    if status is not None:
        ORDER_PAYMENT_SECONDS.observe(max(0.0, time.time() - current.created_at.timestamp()))
    return True


async def handle_payments(
    pctx: PaymentContext, entries: Sequence[Entry], *, source: Stream
) -> None:
    """Start one task per entry (bounded by the semaphore); each acknowledges its own entry."""
    for entry in entries:
        await pctx.slots.acquire()
        IN_FLIGHT.inc()
        task = asyncio.create_task(_one_payment(pctx, entry, source=source))
        pctx.running.add(task)
        task.add_done_callback(pctx.running.discard)


async def _one_payment(pctx: PaymentContext, entry: Entry, *, source: Stream) -> None:
    try:
        if entry.order is None:
            logger.error("malformed payment entry %s: %s", entry.entry_id, entry.fields)
            await source.ack([entry.entry_id])
            return
        if await handle_payment(pctx, entry.order):
            await source.ack([entry.entry_id])
    except errors.StoreUnavailable as e:
        # Left unacknowledged: claimed again after claim_idle_ms, and every step is idempotent.
        logger.warning("payment of %s interrupted: %s", entry.entry_id, e.detail)
    finally:
        IN_FLIGHT.dec()
        pctx.slots.release()


# --- reconciliation -------------------------------------------------------------------------------


async def reconcile_order(pctx: PaymentContext, order: Order) -> OrderStatus | None:
    """Settle one needs_reconciliation order: by the charge the gateway has for it, else by charging
    again with the same key (idempotent), else, past the deadline, as failed (unit released)."""
    ctx = pctx.base
    charge = await pctx.gateway.get_charge(order.order_id)
    if charge is not None and charge.status == "succeeded":
        status = await settle(ctx, order, status=OrderStatus.CONFIRMED, charge_id=charge.charge_id)
    elif charge is not None:
        # Refunded already: a previous give-up that the sweep repaired. The order stays failed.
        status = await settle(
            ctx, order, status=OrderStatus.FAILED, failure_reason=FailureReason.PAYMENT_UNRESOLVED
        )
    elif time.time() - order.created_at.timestamp() > ctx.settings.worker.reconcile_deadline_s:
        status = await settle(
            ctx, order, status=OrderStatus.FAILED, failure_reason=FailureReason.PAYMENT_UNRESOLVED
        )
    else:
        started = time.perf_counter()
        attempt = await pctx.gateway.charge(
            order_id=order.order_id, amount=order.amount, currency=ctx.settings.gateway.currency
        )
        ATTEMPTS.labels(attempt.outcome.value).inc()
        await ctx.pg.record_attempt(
            order.order_id,
            attempt=0,  # 0: made by the reconciler, not by the first-pass retry loop
            outcome=attempt.code or attempt.outcome.value,
            http_status=attempt.answer.status,
            latency_ms=int((time.perf_counter() - started) * 1000),
        )
        if attempt.outcome in (ChargeOutcome.RETRY, ChargeOutcome.UNKNOWN):
            return None
        status = await apply_charge_result(ctx, order, attempt)
    if status is not None and status is not OrderStatus.NEEDS_RECONCILIATION:
        RECONCILED.labels(status.value).inc()
    return status


async def refund_sweep(pctx: PaymentContext) -> int:
    """Refund any succeeded charge whose order was given up (a charge that landed late)."""
    refunded = 0
    for order in await pctx.base.pg.unresolved_failures(
        since_s=REFUND_LOOKBACK_S, recheck_after_s=REFUND_RECHECK_S, limit=RECONCILE_BATCH
    ):
        charge = await pctx.gateway.get_charge(order.order_id)
        if charge is not None and charge.status == "succeeded":
            await pctx.gateway.refund(order.order_id)
            REFUNDS.inc()
            refunded += 1
            logger.warning(
                "refunded a late charge of failed order %s", order.order_id,
                extra={"order_id": order.order_id},
            )  # fmt: skip
    return refunded


async def catch_up_redis(ctx: WorkerContext) -> int:
    """PostgreSQL settles first, Redis second. A reconciler that died, or a Redis that was down,
    between the two left Redis counting an order as in reconciliation (a failed order's units held
    for good) after PostgreSQL confirmed or failed it, and nothing delivers that settlement again.
    Per live sale where Redis counts more units in reconciliation than PostgreSQL, re-apply
    PostgreSQL's status of each order Redis still holds there (settle.lua applies a transition
    once). Returns how many were re-applied."""
    caught = 0
    for sale_id in await ctx.stock.live_sale_ids():
        try:
            in_redis = (await ctx.stock.counters(sale_id)).needs_reconciliation
        except errors.SaleNotFound:
            continue
        if in_redis == 0:
            continue
        in_pg = (await ctx.pg.units_by_status(sale_id))[OrderStatus.NEEDS_RECONCILIATION]
        if in_redis <= in_pg:
            continue  # in step, or a first-pass move to needs_reconciliation on its way to Redis
        for order_id in await ctx.stock.orders_in_state(sale_id, OrderStatus.NEEDS_RECONCILIATION):
            order = await ctx.pg.get_order(order_id)
            if order is not None and order.status is not OrderStatus.NEEDS_RECONCILIATION:
                logger.warning(
                    "order %s is %s in PostgreSQL but not in Redis; applying it", order_id,
                    order.status.value, extra={"order_id": order_id},
                )  # fmt: skip
                await settle(ctx, order, status=order.status)
                caught += 1
    return caught


async def purge_deleted_sales(ctx: WorkerContext) -> None:
    """Free the Redis keys of deleted sales whose last order has settled."""
    for sale_id in await ctx.stock.live_sale_ids():
        if await ctx.stock.is_deleting(sale_id) and await ctx.stock.purge_sale(sale_id):
            logger.info("freed the keys of deleted sale %s", sale_id)


@guarded("reconciler lease")
async def _hold_lease(ctx: WorkerContext) -> bool:
    """One reconciler at a time across all payment workers: a Redis lease, renewed while held.
    Guarded: a Redis outage is StoreUnavailable, which skips a pass; a raw redis-py error used to
    end the reconciler task and with it the whole payment worker."""
    ok = await ctx.redis.set(keys.RECONCILER_LOCK, ctx.consumer, px=LEASE_MS, nx=True)
    if ok:
        return True
    if await ctx.redis.get(keys.RECONCILER_LOCK) == ctx.consumer:
        await ctx.redis.pexpire(keys.RECONCILER_LOCK, LEASE_MS)
        return True
    return False


# Deletes the lease only if this consumer still holds it (it may have expired and moved on).
_RELEASE_LEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


@guarded("reconciler lease")
async def _release_lease(ctx: WorkerContext) -> None:
    """At a clean stop: the next payment worker takes over reconciling at once, instead of
    waiting out the lease (10 s of orders in reconciliation nobody looks at, every deploy)."""
    await ctx.redis.eval(_RELEASE_LEASE, 1, keys.RECONCILER_LOCK, ctx.consumer)


async def reconcile_once(pctx: PaymentContext) -> None:
    ctx = pctx.base
    stuck = await ctx.pg.orders_in_status(OrderStatus.NEEDS_RECONCILIATION, limit=RECONCILE_BATCH)
    results = await asyncio.gather(
        *(reconcile_order(pctx, order) for order in stuck), return_exceptions=True
    )
    for order, result in zip(stuck, results, strict=True):
        if isinstance(result, BaseException):
            logger.warning("reconciling %s failed: %r", order.order_id, result)
    await refund_sweep(pctx)
    await purge_deleted_sales(ctx)


async def reconciler(pctx: PaymentContext) -> None:
    ctx = pctx.base
    interval = ctx.settings.worker.reconcile_interval_s
    loop = asyncio.get_running_loop()
    next_catch_up = 0.0
    while not ctx.stop.is_set():
        try:
            leader = await _hold_lease(ctx)
            RECONCILER_LEADER.set(1 if leader else 0)
            if leader:
                await reconcile_once(pctx)
                if loop.time() >= next_catch_up:
                    next_catch_up = loop.time() + CATCH_UP_EVERY_S
                    await catch_up_redis(ctx)
        except errors.StoreUnavailable as e:
            logger.warning("reconciler pass skipped: %s", e.detail)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(ctx.stop.wait(), interval)
    with contextlib.suppress(errors.StoreUnavailable):
        await _release_lease(ctx)


# --- process --------------------------------------------------------------------------------------


async def run(pctx: PaymentContext) -> None:
    ctx = pctx.base
    consumer = Consumer(
        ctx,
        stream=keys.PAYMENT_STREAM,
        group=keys.PAYMENT_GROUP,
        handle=lambda entries: handle_payments(pctx, entries, source=consumer.stream),
        # Read only as many entries as there are free slots: what we read, we start at once.
        batch_size=lambda: min(ctx.settings.worker.batch_size, _free_slots(pctx)),
    )
    await run_until_stopped(
        ctx,
        port=ctx.settings.worker.payment_port,
        tasks=[consumer.run(), consumer.housekeeping(), reconciler(pctx), _drain_on_stop(pctx)],
    )


def _free_slots(pctx: PaymentContext) -> int:
    return pctx.base.settings.gateway.concurrency - len(pctx.running)


async def _drain_on_stop(pctx: PaymentContext) -> None:
    """On shutdown, give in-flight charges a moment to finish; the rest is claimed elsewhere."""
    await pctx.base.stop.wait()
    if pctx.running:
        await asyncio.wait(list(pctx.running), timeout=pctx.base.settings.gateway.timeout_s + 1)


async def amain(settings: Settings, *, stop: asyncio.Event | None = None) -> None:
    """Run until SIGTERM/SIGINT, or until `stop` is set when one is given (tests, embedding)."""
    ctx = await startup(settings, stop=stop)
    if stop is None:
        install_signal_handlers(ctx.stop)
    gateway = GatewayClient(settings.gateway)
    pctx = PaymentContext(
        base=ctx,
        gateway=gateway,
        slots=asyncio.Semaphore(settings.gateway.concurrency),
        rng=random.Random(),
    )
    try:
        await run(pctx)
    finally:
        await gateway.aclose()
        await shutdown(ctx)


def main() -> None:
    runner.main(amain, process_name="worker-payment")


if __name__ == "__main__":
    main()
