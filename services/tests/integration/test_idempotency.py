"""Idempotent purchases over real HTTP: a replay answers the first answer again (status, body,
`Idempotent-Replayed: true`) and makes no second order; `{}`, an empty body and `{"quantity": 1}`
are one request; a different body under the same key is 422; fifty concurrent requests with one key
make one order; a refused request (sale_not_open, sold_out, rate_limited, invalid body) leaves the
key free; keys are scoped per user."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import httpx
import pytest

from flashsale.adapters import redis_keys as keys
from flashsale.config import Settings
from flashsale.testing import bearer, create_sale, random_user_id
from flashsale.verify import verify

if TYPE_CHECKING:
    from tests.integration.conftest import GatewayControl, Probe

StartApi = Callable[..., Awaitable[tuple[Settings, httpx.AsyncClient]]]


async def purchase(
    client: httpx.AsyncClient,
    settings: Settings,
    sale_id: str,
    user: str,
    key: str,
    content: bytes | None = b'{"quantity": 1}',
) -> httpx.Response:
    headers = {**bearer(settings, user), "Idempotency-Key": key}
    if content:
        headers["Content-Type"] = "application/json"
    return await client.post(f"/v1/sales/{sale_id}/orders", headers=headers, content=content)


def assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, object]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    doc: dict[str, object] = response.json()
    assert doc["code"] == code
    assert doc["status"] == status
    return doc


@pytest.mark.usefixtures("workers")
async def test_a_replay_answers_the_first_answer_and_makes_no_second_order(
    client: httpx.AsyncClient, settings: Settings, admin_headers: dict[str, str], probe: Probe
) -> None:
    sale_id = await create_sale(client, admin_headers, stock=5)
    user = random_user_id()
    first = await purchase(client, settings, sale_id, user, "k-1")
    assert first.status_code == 202, first.text
    assert "idempotent-replayed" not in first.headers
    accepted = first.json()
    assert accepted == {
        "order_id": accepted["order_id"],
        "sale_id": sale_id,
        "user_id": user,
        "quantity": 1,
        "status": "pending",
    }
    assert first.headers["location"] == f"/v1/orders/{accepted['order_id']}"
    # Remembered at least 24 h (and past the sale's end).
    ttl_ms = await probe.redis.pttl(keys.idempotency(sale_id, user, "k-1"))
    assert ttl_ms >= 24 * 3600 * 1000
    for _ in range(3):
        again = await purchase(client, settings, sale_id, user, "k-1")
        assert again.status_code == 202
        assert again.content == first.content
        assert again.headers["idempotent-replayed"] == "true"
        assert again.headers["location"] == first.headers["location"]
    order_id = first.json()["order_id"]
    await probe.wait_settled(sale_id, 1)
    rows = await probe.orders(sale_id)
    assert [str(r["order_id"]) for r in rows] == [order_id]
    assert rows[0]["idempotency_key"] == "k-1"
    assert await probe.remaining(sale_id) == 4
    verdict, _ = await verify(settings, sale_id, wait_s=10)
    assert verdict.ok, verdict.checks


async def test_empty_body_empty_object_and_quantity_one_are_one_request(
    client: httpx.AsyncClient, settings: Settings, admin_headers: dict[str, str], probe: Probe
) -> None:
    sale_id = await create_sale(client, admin_headers, stock=5)
    user = random_user_id()
    first = await purchase(client, settings, sale_id, user, "k", content=None)
    assert first.status_code == 202, first.text
    assert first.json()["quantity"] == 1
    for body in (b"", b"{}", b'{"quantity":1}', b' {\n "quantity" : 1 } ', b"  \n"):
        again = await purchase(client, settings, sale_id, user, "k", content=body)
        assert again.status_code == 202, (body, again.text)
        assert again.headers["idempotent-replayed"] == "true", body
        assert again.content == first.content
    assert await probe.remaining(sale_id) == 4
    assert await probe.queued() == 1


async def test_whitespace_and_spelling_of_the_same_quantity_do_not_matter(
    client: httpx.AsyncClient, settings: Settings, admin_headers: dict[str, str], probe: Probe
) -> None:
    sale_id = await create_sale(client, admin_headers, stock=5, per_user_limit=3)
    user = random_user_id()
    first = await purchase(client, settings, sale_id, user, "k", content=b'{"quantity": 2}')
    assert first.status_code == 202
    again = await purchase(client, settings, sale_id, user, "k", content=b'{\t"quantity":2\n}')
    assert again.headers["idempotent-replayed"] == "true"
    assert again.content == first.content
    assert await probe.remaining(sale_id) == 3


async def test_the_same_key_with_another_body_is_refused_and_reserves_nothing(
    client: httpx.AsyncClient, settings: Settings, admin_headers: dict[str, str], probe: Probe
) -> None:
    sale_id = await create_sale(client, admin_headers, stock=5, per_user_limit=3)
    user = random_user_id()
    first = await purchase(client, settings, sale_id, user, "k")
    assert first.status_code == 202
    async with probe.nothing_reserved(sale_id):
        for body in (b'{"quantity": 2}', b'{"quantity": 3}'):
            reused = await purchase(client, settings, sale_id, user, "k", content=body)
            assert_problem(reused, 422, "idempotency_key_reused")
    # The key still holds the first request.
    again = await purchase(client, settings, sale_id, user, "k", content=b"{}")
    assert again.headers["idempotent-replayed"] == "true"
    assert again.content == first.content


@pytest.mark.usefixtures("workers")
async def test_fifty_concurrent_requests_with_one_key_make_one_order(
    client: httpx.AsyncClient, settings: Settings, admin_headers: dict[str, str], probe: Probe
) -> None:
    sale_id = await create_sale(client, admin_headers, stock=10)
    user = random_user_id()
    answers = await asyncio.gather(
        *(purchase(client, settings, sale_id, user, "one-key") for _ in range(50))
    )
    assert [a.status_code for a in answers] == [202] * 50
    assert len({a.content for a in answers}) == 1
    assert sum("idempotent-replayed" not in a.headers for a in answers) == 1
    await probe.wait_settled(sale_id, 1)
    assert await probe.order_count(sale_id) == 1
    assert await probe.remaining(sale_id) == 9
    verdict, _ = await verify(settings, sale_id, wait_s=10)
    assert verdict.ok, verdict.checks


async def test_keys_are_scoped_per_user(
    client: httpx.AsyncClient, settings: Settings, admin_headers: dict[str, str], probe: Probe
) -> None:
    sale_id = await create_sale(client, admin_headers, stock=5)
    alice = await purchase(client, settings, sale_id, "alice", "shared-key")
    bob = await purchase(client, settings, sale_id, "bob", "shared-key")
    assert (alice.status_code, bob.status_code) == (202, 202)
    assert "idempotent-replayed" not in bob.headers
    assert alice.json()["order_id"] != bob.json()["order_id"]
    assert (alice.json()["user_id"], bob.json()["user_id"]) == ("alice", "bob")
    assert await probe.remaining(sale_id) == 3


async def test_a_refusal_for_a_scheduled_sale_leaves_the_key_free(
    client: httpx.AsyncClient, settings: Settings, admin_headers: dict[str, str], probe: Probe
) -> None:
    sale_id = await create_sale(client, admin_headers, stock=5, opens_in_s=600)
    user = random_user_id()
    async with probe.nothing_reserved(sale_id):
        early = await purchase(client, settings, sale_id, user, "k")
        assert_problem(early, 409, "sale_not_open")
    opened = await client.post(f"/v1/admin/sales/{sale_id}/open", headers=admin_headers)
    assert opened.json()["state"] == "open"
    now = await purchase(client, settings, sale_id, user, "k")
    assert now.status_code == 202, now.text
    assert "idempotent-replayed" not in now.headers


async def test_an_invalid_body_leaves_the_key_free(
    client: httpx.AsyncClient, settings: Settings, admin_headers: dict[str, str], probe: Probe
) -> None:
    sale_id = await create_sale(client, admin_headers, stock=5)
    user = random_user_id()
    async with probe.nothing_reserved(sale_id):
        bad = await purchase(client, settings, sale_id, user, "k", content=b'{"quantity": 0}')
        assert_problem(bad, 422, "invalid_request")
    good = await purchase(client, settings, sale_id, user, "k")
    assert good.status_code == 202
    assert "idempotent-replayed" not in good.headers


@pytest.mark.usefixtures("workers")
async def test_a_sold_out_refusal_leaves_the_key_free_for_a_unit_that_comes_back(
    client: httpx.AsyncClient,
    settings: Settings,
    admin_headers: dict[str, str],
    probe: Probe,
    gw: GatewayControl,
) -> None:
    await gw.set_model(decline_rate=1.0)
    sale_id = await create_sale(client, admin_headers, stock=1)
    first = await purchase(client, settings, sale_id, "alice", "a")
    assert first.status_code == 202
    async with probe.nothing_reserved(sale_id):
        late = await purchase(client, settings, sale_id, "bob", "b")
        assert_problem(late, 409, "sold_out")
    # Alice's card is declined: her unit goes back and Bob's same key now buys it.
    await probe.eventually(lambda: probe.remaining(sale_id), until=lambda r: r == 1)
    retry = await purchase(client, settings, sale_id, "bob", "b")
    assert retry.status_code == 202, retry.text
    assert "idempotent-replayed" not in retry.headers
    assert retry.json()["user_id"] == "bob"


async def test_a_rate_limited_request_leaves_the_key_free(api_with: StartApi, probe: Probe) -> None:
    settings, client = await api_with(api={"rate_limit_user_per_s": 1, "rate_limit_user_burst": 1})
    sale_id = await create_sale(
        client, bearer(settings, "admin-1", admin=True), stock=5, per_user_limit=2
    )
    user = random_user_id()
    assert (await purchase(client, settings, sale_id, user, "k1")).status_code == 202
    async with probe.nothing_reserved(sale_id):
        limited = await purchase(client, settings, sale_id, user, "k2")
        assert_problem(limited, 429, "rate_limited")
    wait = int(limited.headers["retry-after"])
    assert wait >= 1
    await asyncio.sleep(wait)
    later = await purchase(client, settings, sale_id, user, "k2")
    assert later.status_code == 202, later.text
    assert "idempotent-replayed" not in later.headers


async def test_a_replay_after_the_sale_closed_still_answers_the_first_answer(
    client: httpx.AsyncClient, settings: Settings, admin_headers: dict[str, str], probe: Probe
) -> None:
    sale_id = await create_sale(client, admin_headers, stock=1)
    user = random_user_id()
    first = await purchase(client, settings, sale_id, user, "k")
    assert first.status_code == 202
    # Sold out, then closed: a client retrying after a lost answer still gets its order back.
    replay = await purchase(client, settings, sale_id, user, "k")
    assert replay.headers["idempotent-replayed"] == "true"
    await client.post(f"/v1/admin/sales/{sale_id}/close", headers=admin_headers)
    replay = await purchase(client, settings, sale_id, user, "k")
    assert replay.status_code == 202
    assert replay.content == first.content
    fresh = await purchase(client, settings, sale_id, user, "another")
    assert_problem(fresh, 409, "sale_closed")
    assert await probe.queued() == 1
