"""A purchase end to end over real HTTP: API -> Redis -> order worker -> PostgreSQL -> payment
worker -> mock gateway -> settled order, with the invariants checked as `flashsale verify` does."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from flashsale.config import Settings
from flashsale.testing import bearer, buy, create_sale, random_user_id, wait_for_status
from flashsale.verify import verify


@pytest.mark.usefixtures("workers")
async def test_purchase_is_confirmed_and_invariants_hold(
    client: httpx.AsyncClient, settings: Settings, admin_headers: dict[str, str]
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
    # PostgreSQL moves first, Redis's counters right after: wait until both have.
    _, settled = await verify(settings, sale_id, wait_s=10)
    assert settled.quiescent

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


@pytest.mark.usefixtures("workers")
async def test_sell_out_under_concurrency_sells_exactly_the_stock(
    client: httpx.AsyncClient, settings: Settings, admin_headers: dict[str, str]
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
