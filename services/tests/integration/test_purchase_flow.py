"""A purchase end to end over real HTTP: API -> Redis -> order worker -> PostgreSQL -> payment worker
-> mock gateway -> settled order, with the invariants checked by `flashsale verify`'s code."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import httpx
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_delay, wait_fixed

from flashsale.config import Settings
from flashsale.verify import verify

from ..conftest import Workers, bearer, random_sale_id, random_user_id


async def create_sale(
    client: httpx.AsyncClient,
    admin: dict[str, str],
    *,
    stock: int,
    sale_id: str | None = None,
    opens_in_s: float = -1.0,
    duration_s: float = 300.0,
    per_user_limit: int = 1,
) -> str:
    sale_id = sale_id or random_sale_id()
    opens_at = datetime.now(UTC) + timedelta(seconds=opens_in_s)
    response = await client.put(
        f"/v1/admin/sales/{sale_id}",
        headers=admin,
        json={
            "name": "Test sneaker",
            "price": "49.99",
            "stock": stock,
            "opens_at": opens_at.isoformat(),
            "closes_at": (opens_at + timedelta(seconds=duration_s)).isoformat(),
            "per_user_limit": per_user_limit,
        },
    )
    assert response.status_code == 201, response.text
    return sale_id


async def buy(
    client: httpx.AsyncClient, settings: Settings, sale_id: str, user_id: str, key: str
) -> httpx.Response:
    return await client.post(
        f"/v1/sales/{sale_id}/orders",
        headers={**bearer(settings, user_id), "Idempotency-Key": key},
        json={"quantity": 1},
    )


async def wait_for_status(
    client: httpx.AsyncClient, headers: dict[str, str], order_id: str, statuses: set[str]
) -> dict[str, object]:
    async for attempt in AsyncRetrying(
        stop=stop_after_delay(20), wait=wait_fixed(0.05), retry=retry_if_exception_type(AssertionError)
    ):
        with attempt:
            response = await client.get(f"/v1/orders/{order_id}", headers=headers)
            assert response.status_code == 200, response.text
            doc = response.json()
            assert doc["status"] in statuses, doc
            return dict(doc)
    raise AssertionError("unreachable")


async def test_purchase_is_confirmed_and_invariants_hold(
    client: httpx.AsyncClient, settings: Settings, admin_headers: dict[str, str], workers: Workers
) -> None:
    sale_id = await create_sale(client, admin_headers, stock=5)
    user = random_user_id()
    response = await buy(client, settings, sale_id, user, "key-1")
    assert response.status_code == 202, response.text
    order = response.json()
    assert response.headers["location"] == f"/v1/orders/{order['order_id']}"
    assert order["status"] == "pending"

    done = await wait_for_status(client, bearer(settings, user), order["order_id"], {"confirmed"})
    assert done["failure_reason"] is None

    sale = (await client.get(f"/v1/sales/{sale_id}")).json()
    assert sale["remaining"] == 4
    stats = (await client.get(f"/v1/admin/sales/{sale_id}/stats", headers=admin_headers)).json()
    assert stats == {
        "initial_stock": 5,
        "remaining": 4,
        "pending": 0,
        "confirmed": 1,
        "failed": 0,
        "needs_reconciliation": 0,
    }
    verdict, quiet = await verify(settings, sale_id, wait_s=10)
    assert quiet.quiescent
    assert verdict.ok, verdict.checks


async def test_sell_out_under_concurrency_sells_exactly_the_stock(
    client: httpx.AsyncClient, settings: Settings, admin_headers: dict[str, str], workers: Workers
) -> None:
    stock, buyers = 20, 200
    sale_id = await create_sale(client, admin_headers, stock=stock)
    responses = await asyncio.gather(
        *(buy(client, settings, sale_id, f"crowd-{i}", f"k-{i}") for i in range(buyers))
    )
    codes = [r.status_code for r in responses]
    assert codes.count(202) == stock
    assert all(r.json()["code"] == "sold_out" for r in responses if r.status_code == 409)
    assert (await client.get(f"/v1/sales/{sale_id}")).json()["state"] == "sold_out"
    verdict, quiet = await verify(settings, sale_id, wait_s=15)
    assert quiet.quiescent
    assert verdict.ok, verdict.checks
