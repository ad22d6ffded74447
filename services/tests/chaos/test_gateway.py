"""The payment gateway failing one way for every charge (hangs, 503, 429 with Retry-After, 100 %
declines, slow with p95 at 2.5x the worker's timeout): orders end confirmed, failed with the unit
sold again, or in reconciliation and then settled by the reconciler once the gateway recovers; no
order is charged twice, and reconciler passes over the settled sale change nothing."""

from __future__ import annotations

import asyncio
import random

import pytest

from flashsale.adapters.gateway_http import GatewayClient
from flashsale.local import scenarios
from flashsale.local.chaosrun import ChaosRun, Tally
from flashsale.workers import payment, runner

from .conftest import assert_held

# What the orders are once the gateway failed for every one of them (before it recovers).
BEFORE_RECOVERY = {
    "hangs": {"pending": 0},  # a hang that charged is confirmed by the retry; the rest reconcile
    "unavailable": {"pending": 0, "confirmed": 0, "failed": 0},
    "rate-limited": {"pending": 0, "confirmed": 0, "failed": 0},
    "declines": {"pending": 0, "confirmed": 0, "needs_reconciliation": 0},
    "slow": {"pending": 0, "failed": 0},
}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("mode", scenarios.GATEWAY_MODES)
async def test_a_failing_gateway_never_charges_twice_and_everything_settles(
    run: ChaosRun, record: list[Tally], mode: str
) -> None:
    tally = await scenarios.scenario_gateway(run, mode)
    record.append(tally)
    assert_held(tally)
    n = run.profile.gateway_orders
    before = tally.details["before_recovery"]
    for status, units in BEFORE_RECOVERY[mode].items():
        assert before[status] == units, before
    if mode in ("unavailable", "rate-limited"):
        assert before["needs_reconciliation"] == n  # retries ran out: the reconciler's turn
    statuses = tally.details["statuses"]
    if mode == "declines":
        assert before["failed"] == before["remaining"] == n  # every unit went back to stock
        assert statuses == {"failed": n, "confirmed": n}  # and was sold again
    else:
        assert statuses == {"confirmed": n}
    assert tally.charges == statuses["confirmed"]
    assert tally.details["reconciler_idempotent"]
    await reconcile_twice_changes_nothing(run, tally.sale_id)


async def reconcile_twice_changes_nothing(run: ChaosRun, sale_id: str) -> None:
    """Two reconciler passes in this process, beside the running worker's own: the settled sale,
    the gateway's ledger and the Redis counters stay exactly as they were."""
    before = await scenarios.settled_state(run, sale_id)
    settings = run.settings.model_copy(
        update={"gateway": run.settings.gateway.model_copy(update={"timeout_s": 2.0})}
    )
    ctx = await runner.startup(settings)
    gateway = GatewayClient(settings.gateway)
    pctx = payment.PaymentContext(
        base=ctx, gateway=gateway, slots=asyncio.Semaphore(10), rng=random.Random(7)
    )
    try:
        await payment.reconcile_once(pctx)
        await payment.reconcile_once(pctx)
    finally:
        await gateway.aclose()
        await runner.shutdown(ctx)
    assert await scenarios.settled_state(run, sale_id) == before


@pytest.mark.timeout(120)
async def test_a_settlement_redis_missed_is_caught_up(run: ChaosRun, record: list[Tally]) -> None:
    """The reconciler writes PostgreSQL, then Redis; a worker that dies (or a Redis that is down)
    between the two must not leave units held by failed orders, or counted as in reconciliation,
    for ever."""
    tally = await scenarios.scenario_half_settled(run)
    record.append(tally)
    assert_held(tally)
    n = run.profile.gateway_orders
    assert tally.details["before"]["needs_reconciliation"] == n
    assert tally.details["lease_after_stop"] is None
    moved = tally.details["settled_behind_redis"]
    assert moved == {"confirmed": n // 2 + n % 2, "failed": n // 2}
    assert tally.details["statuses"] == {k: v for k, v in moved.items() if v}
