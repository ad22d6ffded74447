"""The waiting room's stream (GET /v1/sales/{id}/queue/events on the SSE server) over real HTTP
against real Valkey, with the real API for joins and purchases: positions (coalesced, only on
change), the admission with its pass, sold out, the random draw at the opening, closing, who may
connect, and the promise that the SSE process does not ask Redis per client per second."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from flashsale.config import Settings
from flashsale.domain import waiting_room as wr
from flashsale.local.embedded import Stores
from flashsale.testing import bearer

from .test_sse import Event, EventStream, Sse, running_sse, wait_ready
from .test_waiting_room import admin_queue, buy_with, create_room_sale, join


@pytest.fixture(scope="module")
def queue_sse(stores: Stores) -> Iterator[Sse]:
    with running_sse(stores.redis_url, heartbeat_s=0.5) as running:
        yield running


@pytest.fixture
async def sse_http(queue_sse: Sse) -> AsyncIterator[httpx.AsyncClient]:
    limits = httpx.Limits(max_connections=300, max_keepalive_connections=300)
    async with httpx.AsyncClient(base_url=queue_sse.url, timeout=10, limits=limits) as client:
        await wait_ready(client)
        yield client


@contextlib.asynccontextmanager
async def queue_stream(
    http: httpx.AsyncClient, sale_id: str, *, params: dict[str, str]
) -> AsyncIterator[EventStream]:
    path = f"/v1/sales/{sale_id}/queue/events"
    async with http.stream("GET", path, params=params) as response:
        assert response.status_code == 200, (await response.aread()).decode()
        yield EventStream(response)


async def ticket_of(client: httpx.AsyncClient, settings: Settings, sale_id: str, user: str) -> str:
    response = await join(client, settings, sale_id, user)
    assert response.status_code == 202, response.text
    ticket: str = response.json()["ticket"]
    return ticket


async def test_positions_then_the_admission_with_a_pass_that_buys(
    client: httpx.AsyncClient,
    settings: Settings,
    admin_headers: dict[str, str],
    sse_http: httpx.AsyncClient,
) -> None:
    sale_id = await create_room_sale(client, admin_headers, opens_in_s=1, rate=2)
    for user in ("u1", "u2", "u3", "u4"):
        await join(client, settings, sale_id, user)
    ticket = await ticket_of(client, settings, sale_id, "u5")

    got: list[tuple[float, Event]] = []
    async with queue_stream(sse_http, sale_id, params={"ticket": ticket}) as events:
        while not got or got[-1][1].name != "admitted":
            event = await events.next(within_s=5)
            got.append((time.monotonic(), event))

    positions = [(at, e.data) for at, e in got if e.name == "position"]
    assert positions[0][1]["position"] == 5
    assert 2 <= positions[0][1]["estimated_wait_s"] <= 4  # the opening, then 5 at 2/s
    numbers = [doc["position"] for _, doc in positions]
    assert numbers == sorted(numbers, reverse=True)
    assert len(set(numbers)) == len(numbers)  # sent only when it changed
    gaps = [b - a for (a, _), (b, _) in zip(positions, positions[1:], strict=False)]
    assert all(gap >= 0.9 for gap in gaps), gaps  # at most one a second
    admitted = got[-1][1].data
    assert set(admitted) == {"pass", "expires_at"}
    bought = await buy_with(client, settings, sale_id, "u5", "k1", admitted["pass"])
    assert bought.status_code == 202, bought.text
    # The API hands out the same pass: the SSE server fixed its expiry in Redis.
    assert (await join(client, settings, sale_id, "u5")).json()["pass"] == admitted["pass"]


async def test_sold_out_reaches_every_waiting_buyer_at_once(
    client: httpx.AsyncClient,
    settings: Settings,
    admin_headers: dict[str, str],
    sse_http: httpx.AsyncClient,
) -> None:
    sale_id = await create_room_sale(client, admin_headers, stock=1, rate=1, opens_in_s=0.2)
    alice = await ticket_of(client, settings, sale_id, "alice")
    waiting = [await ticket_of(client, settings, sale_id, f"b{i}") for i in range(3)]
    async with contextlib.AsyncExitStack() as stack:
        streams = [
            await stack.enter_async_context(queue_stream(sse_http, sale_id, params={"ticket": t}))
            for t in waiting
        ]
        for stream in streams:
            assert (await stream.next()).name == "position"
        async with queue_stream(sse_http, sale_id, params={"ticket": alice}) as mine:
            admitted = await mine.until("admitted", within_s=5)
        started = time.monotonic()
        bought = await buy_with(client, settings, sale_id, "alice", "k", admitted[-1].data["pass"])
        assert bought.status_code == 202
        for stream in streams:
            got = await stream.until("sold_out", within_s=2)
            assert all(e.name == "position" for e in got[:-1])
        assert time.monotonic() - started < 1.0


async def test_a_random_pre_queue_is_drawn_at_the_opening(
    client: httpx.AsyncClient,
    settings: Settings,
    admin_headers: dict[str, str],
    sse_http: httpx.AsyncClient,
) -> None:
    sale_id = await create_room_sale(client, admin_headers, mode="random", rate=1, opens_in_s=1.5)
    tickets = {f"r{i}": await ticket_of(client, settings, sale_id, f"r{i}") for i in range(6)}
    async with contextlib.AsyncExitStack() as stack:
        streams = {
            user: await stack.enter_async_context(
                queue_stream(sse_http, sale_id, params={"ticket": ticket})
            )
            for user, ticket in tickets.items()
        }
        firsts = {user: await stream.next() for user, stream in streams.items()}
        assert {e.data["position"] for e in firsts.values()} == {None}  # not drawn yet
        after = {user: await stream.next(within_s=4) for user, stream in streams.items()}

    room = await admin_queue(client, admin_headers, sale_id)
    assert room["drawn"] == 6
    # At the draw nobody is admitted yet (1/s from the opening): position = rank + 1, the rank
    # being the seed's permutation of the join number, as anyone can recompute it.
    for seq, user in enumerate(tickets, start=1):
        rank = wr.rank(seq, mode=wr.Mode.RANDOM, drawn=6, seed=room["seed"])
        assert rank is not None
        assert (after[user].name, after[user].data["position"]) == ("position", rank + 1)


async def test_closing_the_sale_ends_the_streams(
    client: httpx.AsyncClient,
    settings: Settings,
    admin_headers: dict[str, str],
    sse_http: httpx.AsyncClient,
) -> None:
    sale_id = await create_room_sale(client, admin_headers, rate=1, opens_in_s=30)
    ticket = await ticket_of(client, settings, sale_id, "alice")
    async with queue_stream(sse_http, sale_id, params={"ticket": ticket}) as events:
        assert (await events.next()).name == "position"
        await client.post(f"/v1/admin/sales/{sale_id}/close", headers=admin_headers)
        assert (await events.until("closed", within_s=3))[-1].data == {}
        with pytest.raises(EOFError):
            await events.next(within_s=2)
    again = await sse_http.get(f"/v1/sales/{sale_id}/queue/events", params={"ticket": ticket})
    assert (again.status_code, again.json()["code"]) == (409, "sale_closed")


async def test_who_may_connect(
    client: httpx.AsyncClient,
    settings: Settings,
    admin_headers: dict[str, str],
    sse_http: httpx.AsyncClient,
) -> None:
    sale_id = await create_room_sale(client, admin_headers, rate=1, opens_in_s=30)
    other = await create_room_sale(client, admin_headers, rate=1, opens_in_s=30)
    ticket = await ticket_of(client, settings, sale_id, "alice")
    path = f"/v1/sales/{sale_id}/queue/events"

    async def status(params: dict[str, str], headers: dict[str, str] | None = None) -> Any:
        response = await sse_http.get(path, params=params, headers=headers)
        return response.status_code, response.json()["code"]

    assert await status({}) == (401, "unauthenticated")
    assert await status({"ticket": "forged"}) == (401, "unauthenticated")
    elsewhere = await ticket_of(client, settings, other, "alice")
    assert await status({"ticket": elsewhere}) == (401, "unauthenticated")
    bob = bearer(settings, "bob")["Authorization"].split()[1]
    assert await status({"access_token": bob}) == (404, "not_in_queue")
    plain = await client.put(
        "/v1/admin/sales/plain-sale", headers=admin_headers,
        json={"name": "Plain", "price": "5.00", "stock": 3},
    )  # fmt: skip
    assert plain.status_code in (200, 201)
    plain_path = "/v1/sales/plain-sale/queue/events"
    refused = await sse_http.get(plain_path, params={"access_token": bob})
    assert (refused.status_code, refused.json()["code"]) == (409, "waiting_room_disabled")
    missing = await sse_http.get("/v1/sales/no-such/queue/events", params={"access_token": bob})
    assert missing.status_code == 404
    # The ticket holder, by ticket or by bearer token (header or query).
    alice = bearer(settings, "alice")
    for params, headers in (({"ticket": ticket}, None), ({}, alice)):
        async with sse_http.stream("GET", path, params=params, headers=headers) as response:
            assert response.status_code == 200
            assert (await EventStream(response).next()).name == "position"


async def test_the_sse_process_does_not_ask_redis_per_client_per_second(
    client: httpx.AsyncClient,
    settings: Settings,
    admin_headers: dict[str, str],
    sse_http: httpx.AsyncClient,
    stores: Stores,
) -> None:
    clients, rate = 60, 10
    sale_id = await create_room_sale(client, admin_headers, rate=rate, opens_in_s=0.5)
    tickets = [await ticket_of(client, settings, sale_id, f"c{i}") for i in range(clients)]
    redis = aioredis.Redis.from_url(stores.redis_url, decode_responses=True)
    try:
        async with contextlib.AsyncExitStack() as stack:
            for ticket in tickets:
                stream = queue_stream(sse_http, sale_id, params={"ticket": ticket})
                await (await stack.enter_async_context(stream)).next()
            before = await _script_calls(redis)
            await asyncio.sleep(3.0)  # ~30 admissions at 10/s, 60 clients x 3 s of positions
            calls = await _script_calls(redis) - before
    finally:
        await redis.aclose()
    # One status call per admission (the pass's expiry), not one per client and second (180).
    assert calls <= 3.0 * rate + 10, calls


async def _script_calls(redis: aioredis.Redis) -> int:
    stats: dict[str, Any] = await redis.info("commandstats")
    return sum(
        int(stats.get(f"cmdstat_{name}", {}).get("calls", 0)) for name in ("evalsha", "eval")
    )


async def test_the_sale_stream_shows_the_waiting_room(
    client: httpx.AsyncClient, admin_headers: dict[str, str], sse_http: httpx.AsyncClient
) -> None:
    sale_id = await create_room_sale(client, admin_headers, mode="random", rate=9, session_s=30)
    async with sse_http.stream("GET", f"/v1/sales/{sale_id}/events") as response:
        first = await EventStream(response).next()
    assert first.name == "sale"
    assert first.data["waiting_room"] == {
        "enabled": True, "mode": "random", "admit_per_second": 9, "session_seconds": 30,
    }  # fmt: skip
