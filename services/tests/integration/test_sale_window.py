"""Sale window and state over real HTTP: scheduled (409 sale_not_open with opens_at), opening by the
clock, closed by time or by an admin, admin open/close idempotent and moving the times as the
contract says, sold_out and back to open when a payment fails, DELETE (404 everywhere afterwards,
orders still readable, Redis keys freed once nothing is pending), PUT refusing a stock change after
orders, and the stats counts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from flashsale.config import Settings
from flashsale.testing import bearer, create_sale, random_sale_id, random_user_id, wait_for_status
from flashsale.verify import verify

if TYPE_CHECKING:
    from tests.integration.conftest import GatewayControl, Probe


def parse(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


async def buy(
    client: httpx.AsyncClient, settings: Settings, sale_id: str, user: str, key: str = "k"
) -> httpx.Response:
    return await client.post(
        f"/v1/sales/{sale_id}/orders",
        headers={**bearer(settings, user), "Idempotency-Key": key},
    )


def problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    doc: dict[str, Any] = response.json()
    assert doc["code"] == code
    return doc


async def sale(client: httpx.AsyncClient, sale_id: str) -> dict[str, Any]:
    response = await client.get(f"/v1/sales/{sale_id}")
    assert response.status_code == 200, response.text
    doc: dict[str, Any] = response.json()
    return doc


# --- scheduled, open, closed ----------------------------------------------------------------------


async def test_a_scheduled_sale_refuses_with_its_opening_time(
    client: httpx.AsyncClient, settings: Settings, admin_headers: dict[str, str], probe: Probe
) -> None:
    sale_id = await create_sale(client, admin_headers, stock=3, opens_in_s=3600)
    doc = await sale(client, sale_id)
    assert doc["state"] == "scheduled"
    async with probe.nothing_reserved(sale_id):
        refused = problem(await buy(client, settings, sale_id, "alice"), 409, "sale_not_open")
    assert refused["opens_at"] == doc["opens_at"]
    assert parse(refused["opens_at"]) > datetime.now(UTC) + timedelta(minutes=59)


async def test_a_sale_opens_by_the_clock(
    client: httpx.AsyncClient, settings: Settings, admin_headers: dict[str, str], probe: Probe
) -> None:
    sale_id = await create_sale(client, admin_headers, stock=3, opens_in_s=1.5)
    problem(await buy(client, settings, sale_id, "alice"), 409, "sale_not_open")

    async def state() -> str:
        return str((await sale(client, sale_id))["state"])

    await probe.eventually(state, until=lambda s: s == "open", timeout_s=5)
    assert (await buy(client, settings, sale_id, "alice")).status_code == 202


async def test_a_sale_past_its_closing_time_is_closed(
    client: httpx.AsyncClient, settings: Settings, admin_headers: dict[str, str], probe: Probe
) -> None:
    sale_id = await create_sale(client, admin_headers, stock=3, opens_in_s=-60, duration_s=30)
    assert (await sale(client, sale_id))["state"] == "closed"
    async with probe.nothing_reserved(sale_id):
        problem(await buy(client, settings, sale_id, "alice"), 409, "sale_closed")


async def test_admin_close_moves_closes_at_to_now_and_is_idempotent(
    client: httpx.AsyncClient, settings: Settings, admin_headers: dict[str, str], probe: Probe
) -> None:
    sale_id = await create_sale(client, admin_headers, stock=3)
    before = datetime.now(UTC)
    closed = await client.post(f"/v1/admin/sales/{sale_id}/close", headers=admin_headers)
    assert closed.status_code == 200
    doc = closed.json()
    assert doc["state"] == "closed"
    assert before - timedelta(seconds=2) <= parse(doc["closes_at"]) <= datetime.now(UTC)
    again = await client.post(f"/v1/admin/sales/{sale_id}/close", headers=admin_headers)
    assert again.status_code == 200
    assert again.json() == doc  # nothing moved the second time
    async with probe.nothing_reserved(sale_id):
        problem(await buy(client, settings, sale_id, "alice"), 409, "sale_closed")
    row = await probe.pool.fetchrow("SELECT closes_at FROM sales WHERE sale_id = $1", sale_id)
    assert row is not None
    assert row["closes_at"] == parse(doc["closes_at"])  # PostgreSQL records the same window


async def test_closing_a_scheduled_sale_keeps_its_window_in_order(
    client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    sale_id = await create_sale(client, admin_headers, stock=3, opens_in_s=600)
    doc = (await client.post(f"/v1/admin/sales/{sale_id}/close", headers=admin_headers)).json()
    assert doc["state"] == "closed"
    assert parse(doc["opens_at"]) <= parse(doc["closes_at"]) <= datetime.now(UTC)


async def test_admin_open_moves_a_later_opens_at_to_now_and_is_idempotent(
    client: httpx.AsyncClient, settings: Settings, admin_headers: dict[str, str]
) -> None:
    sale_id = await create_sale(client, admin_headers, stock=3, opens_in_s=600)
    scheduled = await sale(client, sale_id)
    before = datetime.now(UTC)
    opened = await client.post(f"/v1/admin/sales/{sale_id}/open", headers=admin_headers)
    assert opened.status_code == 200
    doc = opened.json()
    assert doc["state"] == "open"
    assert before - timedelta(seconds=2) <= parse(doc["opens_at"]) <= datetime.now(UTC)
    assert doc["closes_at"] == scheduled["closes_at"]  # open moves only opens_at
    again = await client.post(f"/v1/admin/sales/{sale_id}/open", headers=admin_headers)
    assert again.json() == doc
    assert (await buy(client, settings, sale_id, "alice")).status_code == 202


async def test_admin_open_of_an_open_sale_changes_nothing(
    client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    sale_id = await create_sale(client, admin_headers, stock=3, opens_in_s=-30)
    doc = await sale(client, sale_id)
    opened = (await client.post(f"/v1/admin/sales/{sale_id}/open", headers=admin_headers)).json()
    assert opened["opens_at"] == doc["opens_at"]  # already earlier than now: not moved


async def test_admin_open_does_not_reopen_a_closed_sale(
    client: httpx.AsyncClient, settings: Settings, admin_headers: dict[str, str]
) -> None:
    # The contract's open only moves opens_at; a closed sale stays closed (a new window is a PUT).
    sale_id = await create_sale(client, admin_headers, stock=3)
    closed = (await client.post(f"/v1/admin/sales/{sale_id}/close", headers=admin_headers)).json()
    opened = await client.post(f"/v1/admin/sales/{sale_id}/open", headers=admin_headers)
    assert opened.status_code == 200
    assert opened.json() == closed
    problem(await buy(client, settings, sale_id, "alice"), 409, "sale_closed")


# --- sold out and back ----------------------------------------------------------------------------


@pytest.mark.usefixtures("workers")
async def test_sold_out_goes_back_to_open_when_a_payment_fails(
    client: httpx.AsyncClient,
    settings: Settings,
    admin_headers: dict[str, str],
    probe: Probe,
    gw: GatewayControl,
) -> None:
    await gw.set_model(decline_rate=1.0)
    sale_id = await create_sale(client, admin_headers, stock=2)
    orders = [(await buy(client, settings, sale_id, user)).json() for user in ("alice", "bob")]
    async with probe.nothing_reserved(sale_id):
        problem(await buy(client, settings, sale_id, "carol"), 409, "sold_out")
    await probe.wait_settled(sale_id, 2)
    for order in orders:
        failed = await wait_for_status(
            client, bearer(settings, order["user_id"]), order["order_id"], {"failed"}
        )
        assert failed["failure_reason"] == "card_declined"
    doc = await sale(client, sale_id)
    assert (doc["state"], doc["remaining"]) == ("open", 2)

    await gw.set_model()  # cards work again: the returned units sell
    for user in ("carol", "dave"):
        assert (await buy(client, settings, sale_id, user)).status_code == 202
    assert (await sale(client, sale_id))["state"] == "sold_out"
    await probe.wait_settled(sale_id, 4)
    stats = await client.get(f"/v1/admin/sales/{sale_id}/stats", headers=admin_headers)
    assert stats.json() == {
        "initial_stock": 2,
        "remaining": 0,
        "pending": 0,
        "confirmed": 2,
        "failed": 2,
        "needs_reconciliation": 0,
    }
    verdict, _ = await verify(settings, sale_id, wait_s=10)
    assert verdict.ok, verdict.checks


# --- PUT ------------------------------------------------------------------------------------------


def definition(**changes: Any) -> dict[str, Any]:
    opens = datetime.now(UTC) - timedelta(seconds=1)
    body = {
        "name": "Sneaker",
        "price": "49.99",
        "stock": 10,
        "opens_at": opens.isoformat(),
        "closes_at": (opens + timedelta(minutes=5)).isoformat(),
        "per_user_limit": 1,
    }
    return body | changes


async def test_put_is_an_idempotent_upsert(
    client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    sale_id = random_sale_id()
    body = definition()
    created = await client.put(f"/v1/admin/sales/{sale_id}", headers=admin_headers, json=body)
    assert created.status_code == 201
    again = await client.put(f"/v1/admin/sales/{sale_id}", headers=admin_headers, json=body)
    assert again.status_code == 200
    assert again.json() == created.json()
    doc = created.json()
    assert doc["sale_id"] == sale_id
    assert doc["opens_at"].endswith("Z")  # RFC 3339 UTC
    assert doc["closes_at"].endswith("Z")
    assert (doc["price"], doc["initial_stock"], doc["remaining"]) == ("49.99", 10, 10)
    assert parse(doc["opens_at"]) == parse(body["opens_at"]).replace(
        microsecond=parse(body["opens_at"]).microsecond // 1000 * 1000
    )


async def test_put_defaults_open_now_for_five_minutes(
    client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    sale_id = random_sale_id()
    body = {"name": "Quick", "price": "5", "stock": 3}
    response = await client.put(f"/v1/admin/sales/{sale_id}", headers=admin_headers, json=body)
    assert response.status_code == 201, response.text
    doc = response.json()
    assert doc["state"] == "open"
    assert doc["per_user_limit"] == 1
    assert doc["price"] == "5.00"
    assert parse(doc["closes_at"]) - parse(doc["opens_at"]) == timedelta(minutes=5)


async def test_stock_can_change_before_any_order_but_not_after(
    client: httpx.AsyncClient, settings: Settings, admin_headers: dict[str, str], probe: Probe
) -> None:
    sale_id = random_sale_id()
    url = f"/v1/admin/sales/{sale_id}"
    assert (await client.put(url, headers=admin_headers, json=definition(stock=10))).is_success
    resized = await client.put(url, headers=admin_headers, json=definition(stock=20))
    assert resized.status_code == 200
    assert (resized.json()["initial_stock"], resized.json()["remaining"]) == (20, 20)

    assert (await buy(client, settings, sale_id, "alice")).status_code == 202
    refused = await client.put(url, headers=admin_headers, json=definition(stock=30))
    problem(refused, 409, "sale_in_progress")
    assert (await sale(client, sale_id))["initial_stock"] == 20
    assert (
        await probe.pool.fetchval("SELECT initial_stock FROM sales WHERE sale_id = $1", sale_id)
        == 20
    )
    # Everything but the stock may still change.
    renamed = await client.put(
        url, headers=admin_headers, json=definition(stock=20, name="Renamed", per_user_limit=2)
    )
    assert renamed.status_code == 200, renamed.text
    assert (renamed.json()["name"], renamed.json()["remaining"]) == ("Renamed", 19)


async def test_the_per_user_limit_may_rise_but_not_fall_after_orders(
    client: httpx.AsyncClient, settings: Settings, admin_headers: dict[str, str], probe: Probe
) -> None:
    # Lowering it would leave buyers holding more than the limit: invariant 2 broken by a PUT.
    sale_id = random_sale_id()
    url = f"/v1/admin/sales/{sale_id}"
    body = definition(stock=10, per_user_limit=2)
    assert (await client.put(url, headers=admin_headers, json=body)).status_code == 201
    lowered_early = await client.put(url, headers=admin_headers, json=body | {"per_user_limit": 1})
    assert lowered_early.status_code == 200  # nothing sold yet: anything goes
    assert (await client.put(url, headers=admin_headers, json=body)).status_code == 200
    bought = await client.post(
        f"/v1/sales/{sale_id}/orders",
        headers={**bearer(settings, "alice"), "Idempotency-Key": "k"},
        json={"quantity": 2},
    )
    assert bought.status_code == 202
    lowered = await client.put(url, headers=admin_headers, json=body | {"per_user_limit": 1})
    assert "per_user_limit" in problem(lowered, 409, "sale_in_progress")["detail"]
    assert (await sale(client, sale_id))["per_user_limit"] == 2
    assert (
        await probe.pool.fetchval("SELECT per_user_limit FROM sales WHERE sale_id = $1", sale_id)
        == 2
    )
    raised = await client.put(url, headers=admin_headers, json=body | {"per_user_limit": 3})
    assert (raised.status_code, raised.json()["per_user_limit"]) == (200, 3)


# --- DELETE ---------------------------------------------------------------------------------------


async def assert_gone(
    client: httpx.AsyncClient, settings: Settings, admin_headers: dict[str, str], sale_id: str
) -> None:
    problem(await client.get(f"/v1/sales/{sale_id}"), 404, "sale_not_found")
    problem(await buy(client, settings, sale_id, random_user_id()), 404, "sale_not_found")
    admin = f"/v1/admin/sales/{sale_id}"
    problem(await client.delete(admin, headers=admin_headers), 404, "sale_not_found")
    problem(await client.get(f"{admin}/stats", headers=admin_headers), 404, "sale_not_found")
    for action in ("open", "close"):
        problem(
            await client.post(f"{admin}/{action}", headers=admin_headers), 404, "sale_not_found"
        )


async def test_delete_without_orders_frees_the_keys_at_once(
    client: httpx.AsyncClient, settings: Settings, admin_headers: dict[str, str], probe: Probe
) -> None:
    sale_id = await create_sale(client, admin_headers, stock=3)
    assert await probe.sale_keys(sale_id)
    deleted = await client.delete(f"/v1/admin/sales/{sale_id}", headers=admin_headers)
    assert deleted.status_code == 204
    assert deleted.content == b""
    await assert_gone(client, settings, admin_headers, sale_id)
    assert await probe.sale_keys(sale_id) == []
    assert await probe.pool.fetchval(
        "SELECT deleted_at IS NOT NULL FROM sales WHERE sale_id = $1", sale_id
    )


async def test_delete_with_pending_orders_keeps_them_and_frees_keys_after_settlement(
    client: httpx.AsyncClient,
    settings: Settings,
    admin_headers: dict[str, str],
    probe: Probe,
    request: pytest.FixtureRequest,
) -> None:
    sale_id = await create_sale(client, admin_headers, stock=5)
    orders = [(await buy(client, settings, sale_id, u, f"k-{u}")).json() for u in ("ann", "ben")]
    deleted = await client.delete(f"/v1/admin/sales/{sale_id}", headers=admin_headers)
    assert deleted.status_code == 204
    await assert_gone(client, settings, admin_headers, sale_id)
    assert await probe.sale_keys(sale_id)  # two orders still pending: the keys stay for them

    request.getfixturevalue("workers")
    for order in orders:
        done = await wait_for_status(
            client, bearer(settings, order["user_id"]), order["order_id"], {"confirmed"}
        )
        assert done["sale_id"] == sale_id
    await probe.eventually(lambda: probe.sale_keys(sale_id), until=lambda k: k == [])
    await assert_gone(client, settings, admin_headers, sale_id)
    # Orders stay in PostgreSQL and stay readable by their owner and by an admin.
    assert await probe.order_count(sale_id) == 2
    for order in orders:
        mine = await client.get(
            f"/v1/orders/{order['order_id']}", headers=bearer(settings, order["user_id"])
        )
        assert (mine.status_code, mine.json()["status"]) == (200, "confirmed")
        theirs = await client.get(f"/v1/orders/{order['order_id']}", headers=admin_headers)
        assert theirs.status_code == 200


# --- stats ----------------------------------------------------------------------------------------


@pytest.mark.usefixtures("workers")
async def test_stats_count_units_by_status(
    client: httpx.AsyncClient,
    settings: Settings,
    admin_headers: dict[str, str],
    probe: Probe,
    gw: GatewayControl,
) -> None:
    await gw.set_model(decline_rate=0.5, seed=11)
    sale_id = await create_sale(client, admin_headers, stock=30, per_user_limit=3)
    won = 0
    for i in range(12):
        response = await client.post(
            f"/v1/sales/{sale_id}/orders",
            headers={**bearer(settings, f"user-{i}"), "Idempotency-Key": "k"},
            json={"quantity": 1 + i % 3},
        )
        assert response.status_code == 202
        won += 1 + i % 3
    stats_url = f"/v1/admin/sales/{sale_id}/stats"
    first = (await client.get(stats_url, headers=admin_headers)).json()
    # Payments run meanwhile: whatever has settled, every unit is counted exactly once.
    assert first["initial_stock"] == 30
    assert first["pending"] + first["confirmed"] + first["failed"] == won
    assert first["remaining"] + first["pending"] + first["confirmed"] == 30

    await probe.wait_settled(sale_id, 12)
    stats = (await client.get(stats_url, headers=admin_headers)).json()
    units: dict[str, int] = {
        r["status"]: r["units"]
        for r in await probe.pool.fetch(
            "SELECT status, sum(quantity)::int AS units FROM orders WHERE sale_id = $1 "
            "GROUP BY status",
            sale_id,
        )
    }
    assert stats == {
        "initial_stock": 30,
        "remaining": 30 - units.get("confirmed", 0),
        "pending": 0,
        "confirmed": units.get("confirmed", 0),
        "failed": units.get("failed", 0),
        "needs_reconciliation": 0,
    }
    assert stats["confirmed"] > 0
    assert stats["failed"] > 0  # the seeded model declines about half
    verdict, _ = await verify(settings, sale_id, wait_s=10)
    assert verdict.ok, verdict.checks


@pytest.mark.usefixtures("workers")
async def test_a_deleted_sale_with_orders_cannot_be_created_again_under_its_id(
    client: httpx.AsyncClient, settings: Settings, admin_headers: dict[str, str], probe: Probe
) -> None:
    # Its orders keep the id: a new sale under it would mix with them (PostgreSQL's sold counter,
    # per-user holds, verify), and orders accepted by Redis would be refused by PostgreSQL.
    sale_id = await create_sale(client, admin_headers, stock=3)
    assert (await buy(client, settings, sale_id, "alice")).status_code == 202
    url = f"/v1/admin/sales/{sale_id}"
    assert (await client.delete(url, headers=admin_headers)).status_code == 204
    while_pending = await client.put(url, headers=admin_headers, json=definition(stock=3))
    problem(while_pending, 409, "sale_in_progress")

    await probe.eventually(lambda: probe.sale_keys(sale_id), until=lambda k: k == [])
    after_purge = await client.put(url, headers=admin_headers, json=definition(stock=3))
    assert "another id" in problem(after_purge, 409, "sale_in_progress")["detail"]
    assert await probe.sale_keys(sale_id) == []  # Redis did not take the definition
    problem(await buy(client, settings, sale_id, "bob"), 404, "sale_not_found")


async def test_a_deleted_sale_without_orders_can_be_created_again(
    client: httpx.AsyncClient, settings: Settings, admin_headers: dict[str, str], probe: Probe
) -> None:
    sale_id = await create_sale(client, admin_headers, stock=3)
    url = f"/v1/admin/sales/{sale_id}"
    assert (await client.delete(url, headers=admin_headers)).status_code == 204
    again = await client.put(url, headers=admin_headers, json=definition(stock=4))
    assert again.status_code == 201, again.text
    assert (again.json()["initial_stock"], again.json()["remaining"]) == (4, 4)
    assert await probe.pool.fetchval(
        "SELECT deleted_at IS NULL FROM sales WHERE sale_id = $1", sale_id
    )
    assert (await buy(client, settings, sale_id, "alice")).status_code == 202
