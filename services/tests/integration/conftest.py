"""Helpers for the core integration tests: a `probe` that reads Redis and PostgreSQL directly (what
was reserved, queued and written), the gateway's failure model switched at run time, and polling
with a deadline. The stores and servers themselves come from the root conftest."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar, cast

import asyncpg
import httpx
import pytest
import redis.asyncio as aioredis

from flashsale.adapters import redis_keys as keys
from flashsale.config import Settings
from flashsale.local.embedded import Stores
from flashsale.testing import FAST_GATEWAY, ServerThread, make_settings

T = TypeVar("T")


async def eventually(
    check: Callable[[], Awaitable[T]],
    *,
    until: Callable[[T], bool] = bool,
    timeout_s: float = 15.0,
    what: str = "condition",
) -> T:
    """Poll `check()` until `until(value)` holds; AssertionError with the last value after the
    deadline. For conditions that other processes make true (workers draining, reconciling)."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = await check()
        if until(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout_s} s; last: {value!r}")
        await asyncio.sleep(0.05)


class Probe:
    """Direct reads of the stores, independent of the code under test."""

    eventually = staticmethod(eventually)

    def __init__(self, redis: aioredis.Redis, pool: asyncpg.Pool) -> None:
        self.redis = redis
        self.pool = pool

    async def sale_hash(self, sale_id: str) -> dict[str, str]:
        return cast(dict[str, str], await self.redis.hgetall(keys.sale(sale_id)))

    async def remaining(self, sale_id: str) -> int | None:
        value = await self.redis.hget(keys.sale(sale_id), "remaining")
        return None if value is None else int(value)

    async def holds(self, sale_id: str) -> dict[str, int]:
        raw = cast(dict[str, str], await self.redis.hgetall(keys.holds(sale_id)))
        return {user: int(units) for user, units in raw.items()}

    async def queued(self) -> int:
        """Entries in the order stream (reserve.lua's XADD target)."""
        return int(await self.redis.xlen(keys.ORDER_STREAM))

    async def sale_keys(self, sale_id: str) -> list[str]:
        return [k async for k in self.redis.scan_iter(match=f"{keys.PREFIX}:{{{sale_id}}}:*")]

    async def orders(self, sale_id: str) -> list[asyncpg.Record]:
        rows: list[asyncpg.Record] = await self.pool.fetch(
            "SELECT * FROM orders WHERE sale_id = $1 ORDER BY created_at", sale_id
        )
        return rows

    async def order_count(self, sale_id: str) -> int:
        return int(
            await self.pool.fetchval("SELECT count(*) FROM orders WHERE sale_id = $1", sale_id)
        )

    async def order(self, order_id: str) -> asyncpg.Record | None:
        row: asyncpg.Record | None = await self.pool.fetchrow(
            "SELECT * FROM orders WHERE order_id = $1::uuid", order_id
        )
        return row

    async def sold(self, sale_id: str) -> int | None:
        value = await self.pool.fetchval("SELECT sold FROM sales WHERE sale_id = $1", sale_id)
        return None if value is None else int(value)

    async def statuses(self, sale_id: str) -> dict[str, int]:
        """Order rows per status (rows, not units)."""
        rows = await self.pool.fetch(
            "SELECT status, count(*) AS n FROM orders WHERE sale_id = $1 GROUP BY status", sale_id
        )
        return {r["status"]: int(r["n"]) for r in rows}

    async def wait_settled(self, sale_id: str, rows: int, *, timeout_s: float = 20.0) -> None:
        """Wait until the sale has `rows` order rows, none pending or in reconciliation, and Redis
        has applied every settlement too (the workers move PostgreSQL first, then Redis)."""

        async def unsettled() -> tuple[int, int, int]:
            count = await self.order_count(sale_id)
            open_ = await self.pool.fetchval(
                "SELECT count(*) FROM orders WHERE sale_id = $1 "
                "AND status IN ('pending', 'needs_reconciliation')",
                sale_id,
            )
            counters = await self.sale_hash(sale_id)
            in_redis = int(counters.get("pending", 0)) + int(counters.get("nr", 0))
            return count, int(open_), in_redis

        await eventually(
            unsettled,
            until=lambda v: v == (rows, 0, 0),
            timeout_s=timeout_s,
            what=f"{rows} settled orders of {sale_id}",
        )

    @asynccontextmanager
    async def nothing_reserved(self, sale_id: str) -> AsyncIterator[None]:
        """Assert the block reserved nothing: same remaining stock, holds and order stream."""
        before = (await self.remaining(sale_id), await self.holds(sale_id), await self.queued())
        yield
        after = (await self.remaining(sale_id), await self.holds(sale_id), await self.queued())
        assert after == before, f"something was reserved: {before} -> {after}"


@pytest.fixture
async def probe(clean: Stores) -> AsyncIterator[Probe]:
    redis = aioredis.Redis.from_url(clean.redis_url, decode_responses=True)
    pool = await asyncpg.create_pool(clean.postgres_dsn, min_size=1, max_size=4)
    try:
        yield Probe(redis, pool)
    finally:
        await pool.close()
        await redis.aclose()


class GatewayControl:
    """The running mock gateway's admin side: its failure model and its ledger."""

    def __init__(self, server: ServerThread) -> None:
        self.url = server.url

    async def set_model(self, **changes: Any) -> None:
        """Switch the failure model (PUT /v1/admin/model); what is not given is the fast model."""
        async with httpx.AsyncClient(base_url=self.url, timeout=5) as http:
            response = await http.put("/v1/admin/model", json={**FAST_GATEWAY, **changes})
            assert response.status_code == 200, response.text

    async def charges(self) -> dict[str, dict[str, Any]]:
        """Every charge the gateway holds, by order id, with its `attempts` and `charges`."""
        out: dict[str, dict[str, Any]] = {}
        cursor: str | None = None
        async with httpx.AsyncClient(base_url=self.url, timeout=5) as http:
            while True:
                params = {"limit": "1000", **({"cursor": cursor} if cursor else {})}
                page = (await http.get("/v1/charges", params=params)).json()
                out.update({c["order_id"]: c for c in page["charges"]})
                cursor = page["next_cursor"]
                if not cursor:
                    return out

    async def charge(self, order_id: str, amount: str = "49.99") -> httpx.Response:
        """Charge directly, as a processor whose answer was lost would have."""
        async with httpx.AsyncClient(base_url=self.url, timeout=5) as http:
            return await http.post(
                "/v1/charges",
                headers={"Idempotency-Key": order_id},
                json={"order_id": order_id, "amount": amount, "currency": "EUR"},
            )


@pytest.fixture
def gw(gateway: ServerThread) -> GatewayControl:
    return GatewayControl(gateway)


@pytest.fixture
async def api_with(
    clean: Stores,
) -> AsyncIterator[Callable[..., Awaitable[tuple[Settings, httpx.AsyncClient]]]]:
    """Start another real API with settings overrides (`api_with(api={...})`): returns its
    settings and a client; everything is stopped at teardown."""
    from flashsale.api.app import create_app

    started: list[tuple[ServerThread, httpx.AsyncClient]] = []

    async def start(**overrides: Any) -> tuple[Settings, httpx.AsyncClient]:
        settings = make_settings(clean, **overrides)
        server = ServerThread(create_app(settings), port=settings.api.port).__enter__()
        client = httpx.AsyncClient(base_url=server.url, timeout=15)
        started.append((server, client))
        return settings, client

    try:
        yield start
    finally:
        for server, client in started:
            await client.aclose()
            server.__exit__()
