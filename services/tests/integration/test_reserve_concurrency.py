"""The reserve script under concurrency against the real Valkey (STYLE rule 23): stock S, N >> S
concurrent `RedisStock.reserve` calls from distinct users over separate connection pools → exactly S
units reserved, no stock below zero, every user within `per_user_limit` (also with limits and
quantities above 1); then the real order and payment workers drain the queue and PostgreSQL holds
exactly one row per reservation, and the contract's invariants hold (`flashsale.verify`)."""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING

import orjson
import pytest

from flashsale import errors
from flashsale.adapters import pg
from flashsale.adapters.redis_stock import RedisStock, connect
from flashsale.config import Settings
from flashsale.domain.ids import uuid7
from flashsale.domain.purchase import Reservation, fingerprint
from flashsale.domain.sales import SaleDefinition
from flashsale.testing import random_sale_id
from flashsale.verify import verify

if TYPE_CHECKING:
    from tests.integration.conftest import Probe

POOLS = 8  # separate clients, each with its own connection pool


@pytest.fixture
async def stocks(settings: Settings) -> AsyncIterator[list[RedisStock]]:
    # A generous wait for a pooled connection: 800 coroutines queue on these pools, and on a loaded
    # machine the default 2 s could turn a slow queue into StoreUnavailable rather than an answer.
    patient = settings.redis.model_copy(update={"socket_timeout_s": 15.0})
    clients = [connect(patient) for _ in range(POOLS)]
    try:
        yield [RedisStock(client, api=settings.api) for client in clients]
    finally:
        for client in clients:
            await client.aclose()


async def create_sale(settings: Settings, stock: RedisStock, *, units: int, limit: int) -> str:
    """The sale in Redis and PostgreSQL, as the admin API writes it, open for five minutes."""
    now = datetime.now(UTC)
    sale = SaleDefinition(
        sale_id=random_sale_id(),
        name="Concurrency",
        price=Decimal("10.00"),
        stock=units,
        opens_at=now - timedelta(seconds=1),
        closes_at=now + timedelta(minutes=5),
        per_user_limit=limit,
    )
    assert await stock.upsert_sale(sale) is True
    pool = await pg.create_pool(settings.postgres)
    try:
        await pg.PgStore(pool).upsert_sale(sale)
    finally:
        await pool.close()
    return sale.sale_id


async def reserve(stock: RedisStock, sale_id: str, user: str, key: str, qty: int) -> Reservation:
    order_id = str(uuid7())
    body = orjson.dumps(
        {"order_id": order_id, "sale_id": sale_id, "user_id": user, "quantity": qty}
    )
    return await stock.reserve(
        sale_id=sale_id,
        user_id=user,
        qty=qty,
        idempotency_key=key,
        fingerprint=fingerprint(sale_id=sale_id, quantity=qty),
        order_id=order_id,
        body=body,
        client_addr="127.0.0.1",
    )


async def crowd(
    stocks: list[RedisStock], sale_id: str, requests: list[tuple[str, str, int]]
) -> list[Reservation | BaseException]:
    """Every (user, key, qty) at once, spread round-robin over the separate pools."""
    pools = itertools.cycle(stocks)
    return await asyncio.gather(
        *(reserve(next(pools), sale_id, user, key, qty) for user, key, qty in requests),
        return_exceptions=True,
    )


async def drain_and_verify(
    settings: Settings, sale_id: str, probe: Probe, request: pytest.FixtureRequest, *, rows: int
) -> None:
    """Start the real workers (and the gateway they charge), wait for them to settle every order,
    then check rows and invariants."""
    request.getfixturevalue("workers")
    await probe.wait_settled(sale_id, rows)
    verdict, quiet = await verify(settings, sale_id, wait_s=10)
    assert quiet.quiescent, quiet
    assert verdict.ok, verdict.checks


async def test_exactly_the_stock_is_reserved_by_a_crowd_over_separate_connections(
    settings: Settings,
    stocks: list[RedisStock],
    probe: Probe,
    request: pytest.FixtureRequest,
) -> None:
    units, buyers = 50, 800
    sale_id = await create_sale(settings, stocks[0], units=units, limit=1)
    results = await crowd(stocks, sale_id, [(f"user-{i}", f"key-{i}", 1) for i in range(buyers)])

    won = [r for r in results if isinstance(r, Reservation)]
    refused = [r for r in results if not isinstance(r, Reservation)]
    assert len(won) == units
    assert not any(r.replayed for r in won)
    assert all(isinstance(r, errors.SoldOut) for r in refused), Counter(map(type, refused))
    assert await probe.remaining(sale_id) == 0
    holds = await probe.holds(sale_id)
    assert len(holds) == units
    assert set(holds.values()) == {1}
    assert await probe.queued() == units  # one stream entry per 202, none for a refusal
    counters = await probe.sale_hash(sale_id)
    assert (counters["pending"], counters["accepted"]) == (str(units), str(units))

    # The queue is durable: nothing was written to PostgreSQL yet; the workers do it now.
    assert await probe.order_count(sale_id) == 0
    await drain_and_verify(settings, sale_id, probe, request, rows=units)
    rows = await probe.orders(sale_id)
    assert len({r["user_id"] for r in rows}) == units
    assert {str(r["order_id"]) for r in rows} == {orjson.loads(r.body)["order_id"] for r in won}
    assert await probe.sold(sale_id) == units
    assert await probe.statuses(sale_id) == {"confirmed": units}


async def test_limits_and_quantities_above_one_never_oversell(
    settings: Settings,
    stocks: list[RedisStock],
    probe: Probe,
    request: pytest.FixtureRequest,
) -> None:
    units, limit, users, tries = 60, 3, 120, 4
    sale_id = await create_sale(settings, stocks[0], units=units, limit=limit)
    # Every user fires four requests at once, of 1 and 2 units in a fixed pattern: many would put
    # the user over the limit, and together they ask for far more than the stock.
    requests = [
        (f"user-{u}", f"key-{u}-{t}", 1 + (u + t) % 2) for u in range(users) for t in range(tries)
    ]
    results = await crowd(stocks, sale_id, requests)

    remaining = await probe.remaining(sale_id)
    assert remaining is not None
    assert remaining >= 0
    per_user: Counter[str] = Counter()
    for (user, _, qty), result in zip(requests, results, strict=True):
        if isinstance(result, Reservation):
            per_user[user] += qty
    for (user, _, qty), result in zip(requests, results, strict=True):
        if isinstance(result, errors.PurchaseLimitReached):
            # Refused only because this user's own units would have gone over the limit.
            assert per_user[user] + qty > limit, (user, per_user[user], qty)
        elif isinstance(result, errors.SoldOut):
            # Refused only because fewer units were left than it asked for (stock only falls).
            assert qty > remaining, (qty, remaining)
        else:
            assert isinstance(result, Reservation), result
    sold = sum(per_user.values())
    assert sold + remaining == units
    assert max(per_user.values()) <= limit
    # All 60 units go: once fewer than two are left, some user who holds nothing yet still has a
    # one-unit request to come (every request before that moment would have succeeded).
    assert remaining == 0
    assert await probe.holds(sale_id) == dict(per_user)
    won = sum(isinstance(r, Reservation) for r in results)
    assert await probe.queued() == won

    await drain_and_verify(settings, sale_id, probe, request, rows=won)
    rows = await probe.orders(sale_id)
    assert sum(r["quantity"] for r in rows) == sold
    assert await probe.sold(sale_id) == sold


async def test_two_unit_orders_sell_the_stock_exactly_in_pairs(
    settings: Settings, stocks: list[RedisStock], probe: Probe
) -> None:
    units = 40
    sale_id = await create_sale(settings, stocks[0], units=units, limit=2)
    results = await crowd(stocks, sale_id, [(f"user-{i}", f"k-{i}", 2) for i in range(400)])
    assert sum(isinstance(r, Reservation) for r in results) == units // 2
    assert await probe.remaining(sale_id) == 0
    assert set((await probe.holds(sale_id)).values()) == {2}


async def test_one_user_racing_itself_gets_only_its_limit(
    settings: Settings, stocks: list[RedisStock], probe: Probe
) -> None:
    sale_id = await create_sale(settings, stocks[0], units=100, limit=2)
    results = await crowd(stocks, sale_id, [("greedy", f"k-{i}", 1) for i in range(200)])
    assert sum(isinstance(r, Reservation) for r in results) == 2
    refusals = Counter(type(r).__name__ for r in results if not isinstance(r, Reservation))
    assert refusals == {"PurchaseLimitReached": 198}
    assert await probe.remaining(sale_id) == 98
    assert await probe.holds(sale_id) == {"greedy": 2}


async def test_one_key_raced_over_many_connections_reserves_once(
    settings: Settings, stocks: list[RedisStock], probe: Probe
) -> None:
    sale_id = await create_sale(settings, stocks[0], units=10, limit=5)
    results = await crowd(stocks, sale_id, [("alice", "same-key", 1)] * 100)
    assert all(isinstance(r, Reservation) for r in results), results
    reservations = [r for r in results if isinstance(r, Reservation)]
    assert sum(not r.replayed for r in reservations) == 1
    assert len({r.body for r in reservations}) == 1  # every caller got the first answer
    assert await probe.remaining(sale_id) == 9
    assert await probe.queued() == 1
