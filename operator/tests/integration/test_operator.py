"""The operator end to end, in-process: kopf with the product's handlers against the kmock
emulator, and the real API (uvicorn) over embedded Valkey and PostgreSQL. Purchases go over HTTP
with tokens minted here, as a buyer's would."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import jwt
import pytest

from flashsale.config import Settings
from flashsale.testing import ServerThread
from flashsale_operator import lifecycle


def rfc3339(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def buyer(settings: Settings, user: str) -> dict[str, str]:
    claims = {"sub": user, "exp": int(time.time()) + 300}
    token = jwt.encode(claims, settings.auth.jwt_secret, algorithm="HS256")
    return {"Authorization": f"Bearer {token}", "Idempotency-Key": str(uuid.uuid4())}


async def buy(client: httpx.AsyncClient, settings: Settings, sale_id: str, user: str) -> Any:
    response = await client.post(f"/v1/sales/{sale_id}/orders", headers=buyer(settings, user))
    assert response.status_code == 202, response.text
    return response.json()


def status(obj: dict[str, Any] | None) -> dict[str, Any]:
    return dict((obj or {}).get("status") or {})


def phase_is(phase: str) -> Any:
    return lambda obj: status(obj).get("phase") == phase


def condition(obj: dict[str, Any] | None, kind: str) -> dict[str, Any]:
    return next((c for c in status(obj).get("conditions", []) if c["type"] == kind), {})


@pytest.mark.usefixtures("workers")  # payments settle, so status shows confirmed units too
async def test_a_sale_goes_scheduled_open_closed_with_counts_in_status(
    kube: Any, run_flashsale_operator: Any, settings: Settings, client: Any
) -> None:
    opens_at = datetime.now(UTC) + timedelta(seconds=1)
    spec = {
        "product": "Sneakers",
        "price": "49.99",
        "stock": 10,
        "opensAt": rfc3339(opens_at),
        "duration": "2s",
    }
    async with run_flashsale_operator():
        await kube.create("summer", spec)
        scheduled = await kube.wait_for("summer", phase_is("Scheduled"), what="Scheduled")
        sale_id = status(scheduled)["saleId"]
        assert sale_id == "shop-summer"
        assert status(scheduled)["remaining"] == 10
        assert scheduled["metadata"]["finalizers"] == ["flashsale.dev/finalizer"]

        opened = await kube.wait_for("summer", phase_is("Open"), what="Open")
        opened_at = lifecycle.parse_time(status(opened)["openedAt"])
        assert abs(opened_at - opens_at) < timedelta(seconds=1)
        for user in ("u1", "u2", "u3"):
            await buy(client, settings, sale_id, user)
        counted = await kube.wait_for(
            "summer", lambda o: status(o).get("remaining") == 7, what="purchases counted"
        )
        assert status(counted)["pending"] + status(counted)["confirmed"] == 3

        closed = await kube.wait_for("summer", phase_is("Closed"), what="Closed")
        closed_at = lifecycle.parse_time(status(closed)["closedAt"])
        assert abs(closed_at - (opens_at + timedelta(seconds=2))) < timedelta(seconds=1)
        settled = await kube.wait_for(
            "summer", lambda o: status(o).get("confirmed") == 3, what="payments confirmed"
        )
    final = status(settled)
    assert (final["remaining"], final["pending"], final["failed"]) == (7, 0, 0)
    assert condition(settled, "Ready")["status"] == "True"
    sale = (await client.get(f"/v1/sales/{sale_id}")).json()
    assert sale["state"] == "closed"


async def test_a_sale_that_sells_every_unit_shows_sold_out_and_stays_so(
    kube: Any, run_flashsale_operator: Any, settings: Settings, client: Any
) -> None:
    spec = {"product": "Rare", "price": "10.00", "stock": 2, "duration": "2s"}
    async with run_flashsale_operator():
        await kube.create("rare", spec)  # no opensAt: opens when created
        opened = await kube.wait_for("rare", phase_is("Open"), what="Open")
        sale_id = status(opened)["saleId"]
        await buy(client, settings, sale_id, "u1")
        await buy(client, settings, sale_id, "u2")
        sold_out = await kube.wait_for("rare", phase_is("SoldOut"), what="SoldOut")
        assert status(sold_out)["remaining"] == 0
        assert "closedAt" not in status(sold_out)
        closed = await kube.wait_for(
            "rare", lambda o: "closedAt" in status(o), within=5, what="closed"
        )
    assert status(closed)["phase"] == "SoldOut"


async def test_deleting_a_flashsale_closes_and_deletes_its_sale_but_keeps_orders(
    kube: Any, run_flashsale_operator: Any, settings: Settings, client: Any
) -> None:
    spec = {"product": "Hats", "price": "5.00", "stock": 5, "duration": "5m"}
    async with run_flashsale_operator():
        await kube.create("hats", spec)
        opened = await kube.wait_for("hats", phase_is("Open"), what="Open")
        sale_id = status(opened)["saleId"]
        order = await buy(client, settings, sale_id, "u1")
        await kube.delete("hats")
        await kube.wait_for("hats", lambda o: o is None, what="finalizer released")
    assert (await client.get(f"/v1/sales/{sale_id}")).status_code == 404
    headers = buyer(settings, "u1")
    kept = await client.get(f"/v1/orders/{order['order_id']}", headers=headers)
    assert kept.status_code == 200, kept.text


async def test_an_invalid_spec_is_an_error_until_it_is_fixed(
    kube: Any, run_flashsale_operator: Any, client: Any
) -> None:
    spec = {"product": "Socks", "price": "free", "stock": 0}
    async with run_flashsale_operator():
        await kube.create("socks", spec)
        broken = await kube.wait_for("socks", phase_is("Error"), what="Error")
        invalid = condition(broken, "SpecApplied")
        assert (invalid["status"], invalid["reason"]) == ("False", "InvalidSpec")
        assert "spec.price" in invalid["message"]
        assert "spec.stock" in invalid["message"]
        assert (await client.get("/v1/sales/shop-socks")).status_code == 404

        await kube.patch_spec("socks", {"price": "1.50", "stock": 3})
        fixed = await kube.wait_for("socks", phase_is("Open"), what="fixed and Open")
    assert condition(fixed, "SpecApplied")["status"] == "True"
    assert condition(fixed, "Ready")["status"] == "True"
    assert (await client.get("/v1/sales/shop-socks")).json()["price"] == "1.50"


async def test_a_stock_change_after_orders_is_refused_and_the_rest_applied(
    kube: Any, run_flashsale_operator: Any, settings: Settings, client: Any
) -> None:
    spec = {"product": "Caps", "price": "20.00", "stock": 5, "duration": "5m"}
    async with run_flashsale_operator():
        await kube.create("caps", spec)
        opened = await kube.wait_for("caps", phase_is("Open"), what="Open")
        sale_id = status(opened)["saleId"]
        await buy(client, settings, sale_id, "u1")
        await kube.patch_spec("caps", {"stock": 50, "price": "15.00"})
        refused = await kube.wait_for(
            "caps",
            lambda o: condition(o, "SpecApplied").get("reason") == "StockChangeRefused",
            what="stock change refused",
        )
    assert status(refused)["phase"] == "Open"
    assert status(refused)["initialStock"] == 5
    assert status(refused)["observedGeneration"] == refused["metadata"]["generation"]
    sale = (await client.get(f"/v1/sales/{sale_id}")).json()
    assert (sale["initial_stock"], sale["price"]) == (5, "15.00")


async def test_the_operator_waits_out_an_api_outage(
    kube: Any, run_flashsale_operator: Any, settings: Settings
) -> None:
    """The API is down when the FlashSale is created, comes up, goes down again while the sale is
    open (status says so), and comes back: the sale is created once and mirrored again."""
    from flashsale.api.app import create_app

    spec = {"product": "Gloves", "price": "3.00", "stock": 4, "duration": "5m"}
    async with run_flashsale_operator():
        await kube.create("gloves", spec)
        down = await kube.wait_for(
            "gloves",
            lambda o: condition(o, "Ready").get("reason") == "ApiUnavailable",
            what="API unavailable at creation",
        )
        assert "saleId" not in status(down)
        with ServerThread(create_app(settings), port=settings.api.port):
            await kube.wait_for("gloves", phase_is("Open"), what="created once the API is up")
        await kube.wait_for(
            "gloves",
            lambda o: condition(o, "Ready").get("reason") == "ApiUnavailable",
            what="outage while open",
        )
        with ServerThread(create_app(settings), port=settings.api.port):
            back = await kube.wait_for(
                "gloves",
                lambda o: condition(o, "Ready").get("status") == "True",
                what="mirrored again",
            )
    assert status(back)["phase"] == "Open"
    assert status(back)["remaining"] == 4


async def test_a_second_flashsale_cannot_take_over_a_running_sale(
    kube: Any, run_flashsale_operator: Any, client: Any
) -> None:
    spec = {"product": "Boots", "price": "80.00", "stock": 3, "saleId": "boots", "duration": "5m"}
    async with run_flashsale_operator():
        await kube.create("boots", spec)
        await kube.wait_for("boots", phase_is("Open"), what="first one Open")
        await kube.create("boots-again", {**spec, "stock": 30})
        conflict = await kube.wait_for("boots-again", phase_is("Error"), what="conflict")
        assert condition(conflict, "Ready")["reason"] == "SaleIdConflict"
        assert "shop/boots" in condition(conflict, "Ready")["message"]
        await kube.delete("boots-again")
        await kube.wait_for("boots-again", lambda o: o is None, what="conflicting one deleted")
    sale = (await client.get("/v1/sales/boots")).json()
    assert (sale["state"], sale["initial_stock"]) == ("open", 3)
