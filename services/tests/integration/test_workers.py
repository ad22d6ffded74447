"""The order and payment workers against real Valkey, PostgreSQL and the mock gateway: entries left
by a dead consumer are claimed and written exactly once (orders) or charged at most once (payments),
a replayed batch adds nothing, a sale row missing in PostgreSQL is restored from Redis, malformed or
impossible entries go to the dead-letter stream, and every payment failure mode of the gateway
(declines, 503, 429, hangs, a charge landing after its order was given up) ends with the contract's
four invariants holding."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any, cast

import httpx
import orjson
import pytest
from prometheus_client import REGISTRY

from flashsale.adapters import redis_keys as keys
from flashsale.adapters.gateway_http import GatewayClient
from flashsale.adapters.redis_stream import Entry, Stream
from flashsale.config import Settings
from flashsale.domain.ids import uuid7
from flashsale.domain.orders import OrderStatus
from flashsale.domain.purchase import fingerprint
from flashsale.domain.sales import SaleDefinition
from flashsale.local.embedded import Stores
from flashsale.testing import LoopThread, bearer, create_sale, make_settings, random_sale_id
from flashsale.verify import verify
from flashsale.workers import order as order_worker
from flashsale.workers import payment as payment_worker
from flashsale.workers.runner import WorkerContext, shutdown, startup

if TYPE_CHECKING:
    from tests.integration.conftest import GatewayControl, Probe

DEAD_LETTERS = f"{keys.ORDER_STREAM}:dead"


@pytest.fixture
def settings(clean: Stores, request: pytest.FixtureRequest) -> Settings:
    """The suite's settings, with per-test overrides through indirect parametrization."""
    overrides: dict[str, Any] = getattr(request, "param", {})
    return make_settings(clean, **overrides)


def with_settings(**overrides: Any) -> pytest.MarkDecorator:
    return pytest.mark.parametrize("settings", [overrides], indirect=True, ids=[""])


@pytest.fixture
async def ctx(settings: Settings) -> AsyncIterator[WorkerContext]:
    """A worker context on the test's own loop, for driving handlers directly."""
    context = await startup(settings)
    try:
        yield context
    finally:
        await shutdown(context)


@pytest.fixture
async def pctx(
    ctx: WorkerContext, settings: Settings
) -> AsyncIterator[payment_worker.PaymentContext]:
    gateway = GatewayClient(settings.gateway)
    try:
        yield payment_worker.PaymentContext(
            base=ctx, gateway=gateway, slots=asyncio.Semaphore(10), rng=random.Random(3)
        )
    finally:
        await gateway.aclose()


@pytest.fixture
def only_order_worker(settings: Settings) -> Iterator[LoopThread]:
    thread = LoopThread(lambda stop: order_worker.amain(settings, stop=stop)).start()
    try:
        yield thread
    finally:
        thread.stop()


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def buy(
    client: httpx.AsyncClient, settings: Settings, sale_id: str, users: list[str]
) -> list[str]:
    """One 202 per user; returns the order ids."""
    order_ids = []
    for user in users:
        response = await client.post(
            f"/v1/sales/{sale_id}/orders",
            headers={**bearer(settings, user), "Idempotency-Key": f"key-{user}"},
        )
        assert response.status_code == 202, response.text
        order_ids.append(response.json()["order_id"])
    return order_ids


async def idle_for(probe: Probe, stream: str, group: str, *, ms: int) -> None:
    """Wait until every pending entry of the group has been idle for `ms` (claimable)."""

    async def least_idle() -> int:
        pending = await probe.redis.xpending_range(stream, group, min="-", max="+", count=1000)
        return int(min((p["time_since_delivered"] for p in pending), default=0))

    await probe.eventually(least_idle, until=lambda idle: idle >= ms, timeout_s=5)


async def assert_invariants(settings: Settings, sale_id: str) -> None:
    verdict, quiet = await verify(settings, sale_id, wait_s=15)
    assert quiet.quiescent, quiet
    assert verdict.ok, verdict.checks


async def order_doc(
    client: httpx.AsyncClient, settings: Settings, order_id: str, user: str
) -> dict[str, Any]:
    doc: dict[str, Any] = (
        await client.get(f"/v1/orders/{order_id}", headers=bearer(settings, user))
    ).json()
    return doc


# --- redelivery -----------------------------------------------------------------------------------


async def test_orders_left_by_a_dead_consumer_are_claimed_and_written_once(
    client: httpx.AsyncClient,
    settings: Settings,
    admin_headers: dict[str, str],
    probe: Probe,
    request: pytest.FixtureRequest,
) -> None:
    sale_id = await create_sale(client, admin_headers, stock=20)
    order_ids = await buy(client, settings, sale_id, [f"u{i}" for i in range(12)])
    dead = Stream(probe.redis, stream=keys.ORDER_STREAM, group=keys.ORDER_GROUP, consumer="dead")
    await dead.ensure_group()
    taken = await dead.read(count=8, block_ms=100)  # read, never acknowledged: the consumer died
    assert len(taken) == 8
    await idle_for(probe, keys.ORDER_STREAM, keys.ORDER_GROUP, ms=settings.worker.claim_idle_ms)
    claimed = metric("flashsale_queue_claimed_total", stream=keys.ORDER_STREAM)

    request.getfixturevalue("workers")
    await probe.wait_settled(sale_id, 12)
    rows = await probe.orders(sale_id)
    assert sorted(str(r["order_id"]) for r in rows) == sorted(order_ids)  # none lost, none twice
    assert await probe.sold(sale_id) == 12
    assert metric("flashsale_queue_claimed_total", stream=keys.ORDER_STREAM) - claimed == 8
    pending = await probe.redis.xpending(keys.ORDER_STREAM, keys.ORDER_GROUP)
    assert pending["pending"] == 0  # the claimed entries were acknowledged by their new owner
    await assert_invariants(settings, sale_id)


@pytest.mark.usefixtures("only_order_worker")
async def test_payments_left_by_a_dead_consumer_are_charged_at_most_once(
    client: httpx.AsyncClient,
    settings: Settings,
    admin_headers: dict[str, str],
    probe: Probe,
    gw: GatewayControl,
) -> None:
    sale_id = await create_sale(client, admin_headers, stock=20)
    order_ids = await buy(client, settings, sale_id, [f"u{i}" for i in range(10)])
    await probe.eventually(lambda: probe.redis.xlen(keys.PAYMENT_STREAM), until=lambda n: n == 10)
    dead = Stream(
        probe.redis, stream=keys.PAYMENT_STREAM, group=keys.PAYMENT_GROUP, consumer="dead"
    )
    await dead.ensure_group()
    taken = await dead.read(count=100, block_ms=100)
    assert len(taken) == 10
    # The dead consumer had charged half of them before it died, and never settled them.
    for entry in taken[:5]:
        assert entry.order is not None
        assert (await gw.charge(entry.order.order_id)).status_code == 201
    await idle_for(probe, keys.PAYMENT_STREAM, keys.PAYMENT_GROUP, ms=settings.worker.claim_idle_ms)
    claimed = metric("flashsale_queue_claimed_total", stream=keys.PAYMENT_STREAM)

    payments = LoopThread(lambda stop: payment_worker.amain(settings, stop=stop)).start()
    try:
        await probe.wait_settled(sale_id, 10)
    finally:
        payments.stop()
    assert await probe.statuses(sale_id) == {"confirmed": 10}
    charges = await gw.charges()
    assert sorted(charges) == sorted(order_ids)
    assert {c["charges"] for c in charges.values()} == {1}  # no double charge
    assert sorted(c["attempts"] for c in charges.values()) == [1] * 5 + [2] * 5
    assert metric("flashsale_queue_claimed_total", stream=keys.PAYMENT_STREAM) - claimed == 10
    await assert_invariants(settings, sale_id)


async def read_all(ctx: WorkerContext, stream: str, group: str) -> tuple[Stream, list[Entry]]:
    source = Stream(ctx.redis, stream=stream, group=group, consumer="test")
    await source.ensure_group()
    return source, await source.read(count=1000, block_ms=100)


async def test_a_replayed_batch_adds_no_row_and_counts_sold_once(
    client: httpx.AsyncClient,
    settings: Settings,
    admin_headers: dict[str, str],
    probe: Probe,
    ctx: WorkerContext,
    request: pytest.FixtureRequest,
) -> None:
    sale_id = await create_sale(client, admin_headers, stock=10)
    order_ids = await buy(client, settings, sale_id, ["a", "b", "c", "d", "e"])
    source, entries = await read_all(ctx, keys.ORDER_STREAM, keys.ORDER_GROUP)
    payments = Stream(ctx.redis, stream=keys.PAYMENT_STREAM, group=keys.PAYMENT_GROUP, consumer="t")
    await order_worker.handle_orders(ctx, entries, source=source, payments=payments)
    assert await probe.order_count(sale_id) == 5
    assert await probe.sold(sale_id) == 5
    redelivered = metric("flashsale_orders_redelivered_total")

    # A crash after the commit and before the acknowledgement: the same batch comes again.
    await order_worker.handle_orders(ctx, entries, source=source, payments=payments)
    assert await probe.order_count(sale_id) == 5
    assert await probe.sold(sale_id) == 5
    assert metric("flashsale_orders_redelivered_total") - redelivered == 5
    assert await probe.redis.xlen(keys.PAYMENT_STREAM) == 10  # handed over twice, on purpose

    # The payment worker sees every order twice and still charges each once.
    request.getfixturevalue("workers")
    await probe.wait_settled(sale_id, 5)
    charges = await request.getfixturevalue("gw").charges()
    assert sorted(charges) == sorted(order_ids)
    assert {c["charges"] for c in charges.values()} == {1}
    await assert_invariants(settings, sale_id)


async def test_a_sale_row_missing_in_postgresql_is_restored_from_redis(
    ctx: WorkerContext, probe: Probe
) -> None:
    # Redis accepted the sale but the admin's PostgreSQL write never happened.
    now = datetime.now(UTC)
    sale = SaleDefinition(
        sale_id=random_sale_id(),
        name="Redis only",
        price=Decimal("12.50"),
        stock=7,
        opens_at=now - timedelta(seconds=1),
        closes_at=now + timedelta(minutes=5),
        per_user_limit=2,
    )
    await ctx.stock.upsert_sale(sale)
    for user in ("a", "b", "c"):
        order_id = str(uuid7())
        await ctx.stock.reserve(
            sale_id=sale.sale_id,
            user_id=user,
            qty=2,
            idempotency_key="k",
            fingerprint=fingerprint(sale_id=sale.sale_id, quantity=2),
            order_id=order_id,
            body=orjson.dumps({"order_id": order_id}),
            client_addr="127.0.0.1",
        )
    assert await probe.sold(sale.sale_id) is None
    source, entries = await read_all(ctx, keys.ORDER_STREAM, keys.ORDER_GROUP)
    payments = Stream(ctx.redis, stream=keys.PAYMENT_STREAM, group=keys.PAYMENT_GROUP, consumer="t")
    await order_worker.handle_orders(ctx, entries, source=source, payments=payments)

    row = await probe.pool.fetchrow("SELECT * FROM sales WHERE sale_id = $1", sale.sale_id)
    assert row is not None
    assert (row["name"], row["price"], row["initial_stock"], row["per_user_limit"]) == (
        "Redis only",
        Decimal("12.50"),
        7,
        2,
    )
    assert row["sold"] == 6
    assert await probe.order_count(sale.sale_id) == 3
    assert await probe.redis.xlen(DEAD_LETTERS) == 0
    assert await probe.redis.xlen(keys.PAYMENT_STREAM) == 3


@pytest.mark.usefixtures("only_order_worker")
async def test_malformed_and_impossible_entries_go_to_the_dead_letter_stream(
    client: httpx.AsyncClient,
    settings: Settings,
    admin_headers: dict[str, str],
    probe: Probe,
) -> None:
    sale_id = await create_sale(client, admin_headers, stock=2)
    [good] = await buy(client, settings, sale_id, ["alice"])
    malformed = metric("flashsale_orders_dead_lettered_total", reason="malformed")
    constraint = metric("flashsale_orders_dead_lettered_total", reason="constraint")
    now_ms = str(int(datetime.now(UTC).timestamp() * 1000))

    def fields(order_id: str, sale: str, user: str) -> dict[Any, Any]:
        return {"o": order_id, "s": sale, "u": user, "q": "1", "p": "49.99", "k": "k", "t": now_ms}

    bad_ids: list[Any] = [
        await probe.redis.xadd(keys.ORDER_STREAM, {"junk": "1"}),
        await probe.redis.xadd(
            keys.ORDER_STREAM, {**fields(str(uuid7()), sale_id, "x"), "q": "many"}
        ),
        # A sale neither store knows: cannot be written anywhere.
        await probe.redis.xadd(keys.ORDER_STREAM, fields(str(uuid7()), "ghost-sale", "y")),
        # Past the stock (as if Redis were wrong): PostgreSQL's CHECK (sold <= stock) refuses it.
        await probe.redis.xadd(keys.ORDER_STREAM, fields(str(uuid7()), sale_id, "z1")),
        await probe.redis.xadd(keys.ORDER_STREAM, fields(str(uuid7()), sale_id, "z2")),
    ]

    async def dead() -> list[tuple[str, dict[str, str]]]:
        return cast(list[tuple[str, dict[str, str]]], await probe.redis.xrange(DEAD_LETTERS))

    letters = await probe.eventually(dead, until=lambda d: len(d) == 4, timeout_s=10)
    by_entry = {f["entry_id"]: f["reason"] for _, f in letters}
    assert by_entry[bad_ids[0]] == "malformed"
    assert by_entry[bad_ids[1]] == "malformed"
    assert by_entry[bad_ids[2]] == "constraint"
    # Exactly one of the two over-stock orders fits the one unit left in PostgreSQL.
    assert sum(1 for _, f in letters if f.get("s") == sale_id and f["reason"] == "constraint") == 1
    assert await probe.sold(sale_id) == 2
    assert good in {str(r["order_id"]) for r in await probe.orders(sale_id)}
    assert metric("flashsale_orders_dead_lettered_total", reason="malformed") - malformed == 2
    assert metric("flashsale_orders_dead_lettered_total", reason="constraint") - constraint == 2

    async def unacked() -> int:
        return int((await probe.redis.xpending(keys.ORDER_STREAM, keys.ORDER_GROUP))["pending"])

    await probe.eventually(unacked, until=lambda n: n == 0)  # nothing is retried forever


# --- payment outcomes -----------------------------------------------------------------------------


@pytest.mark.usefixtures("workers")
async def test_declined_cards_fail_the_orders_and_their_units_sell_again(
    client: httpx.AsyncClient,
    settings: Settings,
    admin_headers: dict[str, str],
    probe: Probe,
    gw: GatewayControl,
) -> None:
    await gw.set_model(decline_rate=1.0)
    sale_id = await create_sale(client, admin_headers, stock=3)
    users = ["a", "b", "c"]
    order_ids = await buy(client, settings, sale_id, users)
    await probe.wait_settled(sale_id, 3)
    for order_id, user in zip(order_ids, users, strict=True):
        doc = await order_doc(client, settings, order_id, user)
        assert (doc["status"], doc["failure_reason"]) == ("failed", "card_declined")
    assert await probe.remaining(sale_id) == 3
    assert await probe.holds(sale_id) == {}
    assert await probe.sold(sale_id) == 0
    assert await gw.charges() == {}
    await assert_invariants(settings, sale_id)

    await gw.set_model()
    again = await buy(client, settings, sale_id, ["d", "e", "f"])
    await probe.wait_settled(sale_id, 6)
    assert await probe.statuses(sale_id) == {"failed": 3, "confirmed": 3}
    assert sorted(await gw.charges()) == sorted(again)
    await assert_invariants(settings, sale_id)


async def attempts_of(probe: Probe, order_id: str) -> list[Any]:
    rows: list[Any] = await probe.pool.fetch(
        "SELECT * FROM payment_attempts WHERE order_id = $1::uuid ORDER BY id", order_id
    )
    return rows


@with_settings(gateway={"max_attempts": 20})
@pytest.mark.usefixtures("workers")
async def test_503s_are_retried_after_retry_after_until_the_gateway_recovers(
    client: httpx.AsyncClient,
    settings: Settings,
    admin_headers: dict[str, str],
    probe: Probe,
    gw: GatewayControl,
) -> None:
    await gw.set_model(unavailable_rate=1.0, unavailable_retry_after_share=1.0, retry_after_s=1)
    sale_id = await create_sale(client, admin_headers, stock=2)
    [order_id] = await buy(client, settings, sale_id, ["a"])
    tries = await probe.eventually(
        lambda: attempts_of(probe, order_id), until=lambda rows: len(rows) >= 2, timeout_s=10
    )
    assert [(t["outcome"], t["http_status"]) for t in tries[:2]] == [("unavailable", 503)] * 2
    # Retry-After: 1 is a floor: the backoff alone (<= 50 ms here) would have retried at once.
    gap = tries[1]["created_at"] - tries[0]["created_at"]
    assert gap >= timedelta(seconds=0.9), gap
    assert (await order_doc(client, settings, order_id, "a"))["status"] == "pending"

    await gw.set_model()
    await probe.wait_settled(sale_id, 1)
    assert (await order_doc(client, settings, order_id, "a"))["status"] == "confirmed"
    assert (await gw.charges())[order_id]["charges"] == 1
    await assert_invariants(settings, sale_id)


@with_settings(gateway={"max_attempts": 2})
@pytest.mark.usefixtures("workers")
async def test_429s_until_retries_run_out_then_the_reconciler_settles_after_recovery(
    client: httpx.AsyncClient,
    settings: Settings,
    admin_headers: dict[str, str],
    probe: Probe,
    gw: GatewayControl,
) -> None:
    await gw.set_model(rate_limited_rate=1.0, retry_after_s=1)
    sale_id = await create_sale(client, admin_headers, stock=2)
    [order_id] = await buy(client, settings, sale_id, ["a"])

    async def status() -> str:
        return str((await order_doc(client, settings, order_id, "a"))["status"])

    await probe.eventually(status, until=lambda s: s == "needs_reconciliation", timeout_s=10)
    tries = await attempts_of(probe, order_id)
    first_pass = [t for t in tries if t["attempt"] > 0]
    assert [(t["attempt"], t["outcome"], t["http_status"]) for t in first_pass] == [
        (1, "rate_limited", 429),
        (2, "rate_limited", 429),
    ]
    assert first_pass[1]["created_at"] - first_pass[0]["created_at"] >= timedelta(seconds=0.9)
    stats = (await client.get(f"/v1/admin/sales/{sale_id}/stats", headers=admin_headers)).json()
    assert (stats["needs_reconciliation"], stats["remaining"]) == (1, 1)  # still holds its unit

    await gw.set_model()
    await probe.eventually(status, until=lambda s: s == "confirmed", timeout_s=10)
    reconciler = [t for t in await attempts_of(probe, order_id) if t["attempt"] == 0]
    assert reconciler  # the reconciler's own attempts are recorded as attempt 0
    assert (await gw.charges())[order_id]["charges"] == 1
    await assert_invariants(settings, sale_id)


@with_settings(gateway={"timeout_s": 0.3, "max_attempts": 3})
@pytest.mark.usefixtures("workers")
async def test_a_hang_that_charged_is_retried_with_the_same_key_and_charged_once(
    client: httpx.AsyncClient,
    settings: Settings,
    admin_headers: dict[str, str],
    probe: Probe,
    gw: GatewayControl,
) -> None:
    # The processor charges, then never answers; the retry finds the charge under the same key.
    await gw.set_model(hang_rate=1.0, hang_charge_share=1.0)
    sale_id = await create_sale(client, admin_headers, stock=2)
    [order_id] = await buy(client, settings, sale_id, ["a"])
    await probe.wait_settled(sale_id, 1)
    assert (await order_doc(client, settings, order_id, "a"))["status"] == "confirmed"
    tries = await attempts_of(probe, order_id)
    assert [(t["outcome"], t["http_status"]) for t in tries] == [
        ("unknown", None),
        ("succeeded", 201),
    ]
    charge = (await gw.charges())[order_id]
    assert (charge["charges"], charge["attempts"]) == (1, 2)
    await assert_invariants(settings, sale_id)


@with_settings(gateway={"timeout_s": 0.3, "max_attempts": 2})
@pytest.mark.usefixtures("workers")
async def test_hangs_until_retries_run_out_then_the_reconciler_settles_after_recovery(
    client: httpx.AsyncClient,
    settings: Settings,
    admin_headers: dict[str, str],
    probe: Probe,
    gw: GatewayControl,
) -> None:
    await gw.set_model(hang_rate=1.0, hang_charge_share=0.0)
    sale_id = await create_sale(client, admin_headers, stock=2)
    [order_id] = await buy(client, settings, sale_id, ["a"])

    async def status() -> str:
        return str((await order_doc(client, settings, order_id, "a"))["status"])

    await probe.eventually(status, until=lambda s: s == "needs_reconciliation", timeout_s=10)
    assert await gw.charges() == {}
    await gw.set_model()
    await probe.eventually(status, until=lambda s: s == "confirmed", timeout_s=10)
    charge = (await gw.charges())[order_id]
    assert charge["charges"] == 1
    assert charge["attempts"] >= 3  # two timed out, the reconciler's went through
    await assert_invariants(settings, sale_id)


async def place_and_write(
    client: httpx.AsyncClient,
    settings: Settings,
    admin_headers: dict[str, str],
    ctx: WorkerContext,
    user: str,
) -> tuple[str, Any]:
    """A sale with one order written to PostgreSQL by the order worker's own handler."""
    sale_id = await create_sale(client, admin_headers, stock=3)
    [order_id] = await buy(client, settings, sale_id, [user])
    source, entries = await read_all(ctx, keys.ORDER_STREAM, keys.ORDER_GROUP)
    payments = Stream(ctx.redis, stream=keys.PAYMENT_STREAM, group=keys.PAYMENT_GROUP, consumer="t")
    await order_worker.handle_orders(ctx, entries, source=source, payments=payments)
    placed = await ctx.pg.get_order(order_id)
    assert placed is not None
    return sale_id, placed


@with_settings(gateway={"timeout_s": 0.3, "max_attempts": 1})
async def test_the_reconciler_confirms_an_order_whose_charge_exists_without_charging_again(
    client: httpx.AsyncClient,
    settings: Settings,
    admin_headers: dict[str, str],
    probe: Probe,
    gw: GatewayControl,
    pctx: payment_worker.PaymentContext,
    ctx: WorkerContext,
) -> None:
    sale_id, placed = await place_and_write(client, settings, admin_headers, ctx, "a")
    await gw.set_model(hang_rate=1.0, hang_charge_share=1.0)
    assert await payment_worker.handle_payment(pctx, placed)
    stuck = await ctx.pg.get_order(placed.order_id)
    assert stuck is not None
    assert stuck.status is OrderStatus.NEEDS_RECONCILIATION
    assert await payment_worker.reconcile_order(pctx, stuck) is OrderStatus.CONFIRMED
    charge = (await gw.charges())[placed.order_id]
    assert (charge["charges"], charge["attempts"]) == (1, 1)  # looked up, not charged again
    confirmed = await ctx.pg.get_order(placed.order_id)
    assert confirmed is not None
    assert confirmed.charge_id == charge["charge_id"]
    await probe.redis.delete(keys.PAYMENT_STREAM)  # the hand-off nobody consumes in this test
    await assert_invariants(settings, sale_id)


@with_settings(gateway={"timeout_s": 0.3, "max_attempts": 1}, worker={"reconcile_deadline_s": 0.05})
async def test_a_charge_landing_after_its_order_was_given_up_is_refunded_by_the_sweep(
    client: httpx.AsyncClient,
    settings: Settings,
    admin_headers: dict[str, str],
    probe: Probe,
    gw: GatewayControl,
    pctx: payment_worker.PaymentContext,
    ctx: WorkerContext,
) -> None:
    sale_id, placed = await place_and_write(client, settings, admin_headers, ctx, "a")
    await probe.redis.delete(keys.PAYMENT_STREAM)  # the hand-off nobody consumes in this test
    await gw.set_model(hang_rate=1.0, hang_charge_share=0.0)
    assert await payment_worker.handle_payment(pctx, placed)
    stuck = await ctx.pg.get_order(placed.order_id)
    assert stuck is not None
    assert stuck.status is OrderStatus.NEEDS_RECONCILIATION

    # Past the deadline and the gateway still knows no charge: given up, the unit released.
    assert await payment_worker.reconcile_order(pctx, stuck) is OrderStatus.FAILED
    given_up = await ctx.pg.get_order(placed.order_id)
    assert given_up is not None
    assert (given_up.status, given_up.failure_reason) == (OrderStatus.FAILED, "payment_unresolved")
    assert await probe.remaining(sale_id) == 3

    # Then the processor's charge lands after all.
    await gw.set_model()
    assert (await gw.charge(placed.order_id)).status_code == 201
    verdict, _ = await verify(settings, sale_id)
    assert not verdict.ok
    assert "succeeded charges of failed orders not refunded" in verdict.checks[3].detail

    assert await payment_worker.refund_sweep(pctx) == 1
    assert (await gw.charges())[placed.order_id]["status"] == "refunded"
    assert await payment_worker.refund_sweep(pctx) == 0  # refunded once, left alone afterwards
    # The order stays failed: a refunded charge is never a confirmation.
    assert await payment_worker.reconcile_order(pctx, given_up) is OrderStatus.FAILED
    await assert_invariants(settings, sale_id)
