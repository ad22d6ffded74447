"""The SSE server over real HTTP against real Valkey: uvicorn (uvloop, httptools) in a background
thread as `python -m flashsale.sse` runs it, sales changed through the same Lua scripts the API and
workers use, and streams read with httpx.

Covers the contract of GET /v1/sales/{id}/events (snapshot first, coalesced stock, state events at
once, Last-Event-ID, heartbeats, deletion, 404), GET /v1/me/events (only the caller's orders, 401),
the connection bounds, health and metrics, and a Redis restart."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import shutil
import socket
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, cast

import httpx
import orjson
import pytest
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_delay, wait_fixed

from flashsale import config
from flashsale.adapters import redis_keys as keys
from flashsale.adapters import tokens
from flashsale.adapters.redis_stock import RedisStock, connect
from flashsale.domain.orders import OrderStatus
from flashsale.domain.sales import SaleDefinition
from flashsale.local.embedded import EmbeddedValkey, free_port
from flashsale.sse import server
from flashsale.testing import ServerThread

WINDOW_S = 0.25  # SseSettings.coalesce_ms default, as in production
NO_LIMITS = config.ApiSettings(rate_limit_user_per_s=0, rate_limit_addr_per_s=0)


@dataclass(frozen=True)
class Event:
    name: str  # "comment" for a `:` line
    id: int | None
    data: Any


class EventStream:
    """Reads SSE events off an httpx streaming response."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self._lines = response.aiter_lines()

    async def next(self, *, within_s: float = 5.0, comments: bool = False) -> Event:
        async with asyncio.timeout(within_s):
            while True:
                event = await self._block()
                if event is not None and (comments or event.name != "comment"):
                    return event

    async def until(self, name: str, *, within_s: float = 5.0) -> list[Event]:
        """Every event up to and including the first called `name`."""
        seen: list[Event] = []
        async with asyncio.timeout(within_s):
            while not seen or seen[-1].name != name:
                seen.append(await self.next(within_s=within_s))
        return seen

    async def _block(self) -> Event | None:
        fields: dict[str, str] = {}
        async for line in self._lines:
            if line == "":
                break
            if line.startswith(":"):
                return Event("comment", None, line[1:].strip())
            key, _, value = line.partition(": ")
            fields[key] = value
        else:
            raise EOFError("the stream ended")
        if "event" not in fields:
            return None  # e.g. the `retry:` block
        event_id = int(fields["id"]) if "id" in fields else None
        return Event(fields["event"], event_id, orjson.loads(fields["data"]))


@dataclass(frozen=True)
class Sse:
    url: str
    settings: config.Settings


@contextlib.contextmanager
def running_sse(redis_url: str, **sse: Any) -> Iterator[Sse]:
    """build_server() as __main__ runs it, on a free port, in a thread with its own uvloop."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    settings = config.Settings(
        redis=config.RedisSettings(url=redis_url, socket_timeout_s=0.5),
        sse=config.SseSettings(port=port, **sse),
    )
    try:
        with ServerThread(port=port, server=server.build_server(settings), sockets=[sock]):
            yield Sse(f"http://127.0.0.1:{port}", settings)
    finally:
        sock.close()


async def wait_ready(http: httpx.AsyncClient, *, within_s: float = 10.0) -> None:
    async for attempt in AsyncRetrying(
        stop=stop_after_delay(within_s),
        wait=wait_fixed(0.05),
        retry=retry_if_exception_type(AssertionError),
        reraise=True,
    ):
        with attempt:
            assert (await http.get("/readyz")).status_code == 200


@pytest.fixture(scope="module")
def sse(stores: Any) -> Iterator[Sse]:
    with running_sse(stores.redis_url, heartbeat_s=0.5) as running:
        yield running


@pytest.fixture
async def http(sse: Sse) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=sse.url, timeout=10) as client:
        await wait_ready(client)
        yield client


@pytest.fixture(scope="module", autouse=True)
async def _leave_no_orders_behind(stores: Any) -> AsyncIterator[None]:
    """The reservations here append to the global order stream, for sales PostgreSQL never heard
    of: take them out again, so a later worker test does not find them."""
    yield
    client = connect(config.RedisSettings(url=stores.redis_url))
    try:
        entries = cast(list[tuple[str, dict[str, str]]], await client.xrange(keys.ORDER_STREAM))
        ours = [entry_id for entry_id, fields in entries if fields.get("s", "").startswith("sse-")]
        if ours:
            await client.xdel(keys.ORDER_STREAM, *ours)
    finally:
        await client.aclose()


@pytest.fixture
async def stock(stores: Any) -> AsyncIterator[RedisStock]:
    store = RedisStock(connect(config.RedisSettings(url=stores.redis_url)), api=NO_LIMITS)
    yield store
    await store.client.aclose()


def random_sale_id() -> str:
    return f"sse-{secrets.token_hex(5)}"


async def create_sale(
    stock: RedisStock, *, stock_units: int = 10, opens_in_s: float = -1, lasts_s: float = 300
) -> str:
    sale_id = random_sale_id()
    now = datetime.now(UTC)
    opens = now + timedelta(seconds=opens_in_s)
    await stock.upsert_sale(
        SaleDefinition(sale_id, "Flash shoe", Decimal("49.99"), stock_units, opens,
                       opens + timedelta(seconds=lasts_s), per_user_limit=1)
    )  # fmt: skip
    return sale_id


async def reserve(stock: RedisStock, sale_id: str, user_id: str) -> str:
    order_id = secrets.token_hex(8)
    await stock.reserve(
        sale_id=sale_id, user_id=user_id, qty=1, idempotency_key=order_id, fingerprint="f",
        order_id=order_id, body=b"{}", client_addr="sse-test",
    )  # fmt: skip
    return order_id


@contextlib.asynccontextmanager
async def stream(
    http: httpx.AsyncClient, path: str, headers: dict[str, str] | None = None
) -> AsyncIterator[EventStream]:
    async with http.stream("GET", path, headers=headers) as response:
        assert response.status_code == 200, (await response.aread()).decode()
        yield EventStream(response)


# --- the sale stream ------------------------------------------------------------------------------


async def test_first_event_is_the_sale_document(http: httpx.AsyncClient, stock: RedisStock) -> None:
    sale_id = await create_sale(stock, stock_units=7)
    await reserve(stock, sale_id, "u1")

    async with stream(http, f"/v1/sales/{sale_id}/events") as events:
        assert events.response.headers["content-type"].startswith("text/event-stream")
        assert events.response.headers["access-control-allow-origin"] == "*"
        first = await events.next(within_s=1)

    expected = (await stock.get_sale(sale_id)).document(datetime.now(UTC))
    assert first == Event("sale", 2, expected)  # seq 1 = created, 2 = the reservation
    assert first.data["remaining"] == 6
    assert first.data["state"] == "open"


async def test_stock_events_are_coalesced_and_the_last_value_arrives(
    http: httpx.AsyncClient, stock: RedisStock
) -> None:
    sale_id = await create_sale(stock, stock_units=500)
    async with stream(http, f"/v1/sales/{sale_id}/events") as events:
        await events.next()
        started = time.monotonic()
        await asyncio.gather(*(reserve(stock, sale_id, f"u{i}") for i in range(200)))
        burst_s = time.monotonic() - started

        received: list[Event] = []
        while not received or received[-1].data["remaining"] != 300:
            received.append(await events.next(within_s=2))
        elapsed_s = time.monotonic() - started

    assert {e.name for e in received} == {"stock"}
    # A leading edge, then at most one per window, and the trailing one.
    assert len(received) <= elapsed_s / WINDOW_S + 2, (len(received), elapsed_s, burst_s)
    assert len(received) < 20
    ids = [e.id for e in received if e.id is not None]
    assert len(ids) == len(received)
    assert ids == sorted(ids)
    assert received[-1].data == {"remaining": 300, "state": "open", "seq": 201}


async def test_state_opens_by_timer_and_closes_by_timer(
    http: httpx.AsyncClient, stock: RedisStock
) -> None:
    sale_id = await create_sale(stock, opens_in_s=0.6, lasts_s=0.6)

    async with stream(http, f"/v1/sales/{sale_id}/events") as events:
        first = await events.next()
        assert first.data["state"] == "scheduled"
        opened = await events.next(within_s=2)
        closed = await events.next(within_s=2)

    # Nobody publishes these: the server's timers do, reusing the latest seq as the id.
    assert opened == Event("state", first.id, {"state": "open", "remaining": 10, "seq": 1})
    assert closed == Event("state", first.id, {"state": "closed", "remaining": 10, "seq": 1})


async def test_sold_out_then_open_again_after_a_failed_payment(
    http: httpx.AsyncClient, stock: RedisStock
) -> None:
    sale_id = await create_sale(stock, stock_units=1)

    async with stream(http, f"/v1/sales/{sale_id}/events") as events:
        await events.next()
        order_id = await reserve(stock, sale_id, "buyer")
        sold_out = await events.next(within_s=1)
        await stock.settle(
            sale_id=sale_id, order_id=order_id, user_id="buyer", qty=1,
            status=OrderStatus.FAILED, failure_reason="card_declined",
        )  # fmt: skip
        reopened = await events.next(within_s=1)

    assert sold_out == Event("state", 2, {"state": "sold_out", "remaining": 0, "seq": 2})
    assert reopened == Event("state", 3, {"state": "open", "remaining": 1, "seq": 3})


async def test_an_admin_close_is_a_state_event_and_a_new_document(
    http: httpx.AsyncClient, stock: RedisStock
) -> None:
    sale_id = await create_sale(stock)

    async with stream(http, f"/v1/sales/{sale_id}/events") as events:
        await events.next()
        await stock.move_window(sale_id, action="close")
        got = await events.until("sale", within_s=2)

    assert [(e.name, e.id) for e in got] == [("state", 2), ("sale", 2)]
    assert got[0].data == {"state": "closed", "remaining": 10, "seq": 2}
    assert got[1].data["state"] == "closed"


async def test_a_deleted_sale_ends_its_streams(http: httpx.AsyncClient, stock: RedisStock) -> None:
    sale_id = await create_sale(stock)

    async with stream(http, f"/v1/sales/{sale_id}/events") as events:
        await events.next()
        await stock.delete_sale(sale_id)
        got = await events.until("deleted", within_s=2)
        with pytest.raises(EOFError):
            await events.next(within_s=2)

    assert [e.name for e in got] == ["state", "deleted"]
    assert got[0].data["state"] == "closed"
    assert got[1].data == {"sale_id": sale_id}
    assert (await http.get(f"/v1/sales/{sale_id}/events")).status_code == 404


async def test_a_reconnect_with_last_event_id_gets_the_snapshot_at_once(
    http: httpx.AsyncClient, stock: RedisStock
) -> None:
    sale_id = await create_sale(stock)
    async with stream(http, f"/v1/sales/{sale_id}/events") as events:
        first = await events.next()
    await reserve(stock, sale_id, "u1")
    await reserve(stock, sale_id, "u2")

    headers = {"Last-Event-ID": str(first.id)}
    async with stream(http, f"/v1/sales/{sale_id}/events", headers=headers) as events:
        again = await events.next(within_s=1)

    assert again.name == "sale"
    assert again.id == 3
    assert again.data["remaining"] == 8


async def test_heartbeat_comments_keep_an_idle_stream_alive(
    http: httpx.AsyncClient, stock: RedisStock, sse: Sse
) -> None:
    sale_id = await create_sale(stock)
    heartbeat_s = sse.settings.sse.heartbeat_s

    async with stream(http, f"/v1/sales/{sale_id}/events") as events:
        await events.next()
        times = []
        for _ in range(3):
            beat = await events.next(within_s=heartbeat_s * 2, comments=True)
            assert beat == Event("comment", None, "hb")
            times.append(time.monotonic())

    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert all(gap < heartbeat_s * 1.5 for gap in gaps), gaps


async def test_unknown_or_malformed_sale_is_a_404_problem(http: httpx.AsyncClient) -> None:
    for sale_id in (random_sale_id(), "Not_A_Sale"):
        response = await http.get(f"/v1/sales/{sale_id}/events")

        assert response.status_code == 404
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["code"] == "sale_not_found"


async def test_cors_preflight_and_unknown_routes(http: httpx.AsyncClient) -> None:
    preflight = await http.options(
        "/v1/me/events", headers={"Origin": "http://127.0.0.1:3000",
                                  "Access-Control-Request-Headers": "authorization"}
    )  # fmt: skip
    assert preflight.status_code == 204
    assert preflight.headers["access-control-allow-origin"] == "*"
    assert "Authorization" in preflight.headers["access-control-allow-headers"]

    assert (await http.get("/nope")).json()["code"] == "not_found"
    assert (await http.post("/v1/me/events")).status_code == 405


# --- the order stream -----------------------------------------------------------------------------


async def test_me_events_deliver_only_the_callers_orders(
    http: httpx.AsyncClient, stock: RedisStock, sse: Sse
) -> None:
    sale_id = await create_sale(stock)
    mine = await reserve(stock, sale_id, "alice")
    theirs = await reserve(stock, sale_id, "bob")
    token = tokens.mint(sse.settings.auth, user_id="alice")

    headers = {"Authorization": f"Bearer {token}"}
    async with stream(http, "/v1/me/events", headers=headers) as events:
        for order_id, user in ((theirs, "bob"), (mine, "alice")):
            await stock.settle(
                sale_id=sale_id, order_id=order_id, user_id=user, qty=1,
                status=OrderStatus.CONFIRMED, failure_reason=None,
            )  # fmt: skip
        got = await events.next(within_s=2)

    assert got == Event(
        "order", None,
        {"order_id": mine, "sale_id": sale_id, "status": "confirmed", "failure_reason": None},
    )  # fmt: skip


async def test_me_events_take_the_token_from_the_query_for_eventsource(
    http: httpx.AsyncClient, stock: RedisStock, sse: Sse
) -> None:
    sale_id = await create_sale(stock)
    order_id = await reserve(stock, sale_id, "carol")
    token = tokens.mint(sse.settings.auth, user_id="carol")

    async with stream(http, f"/v1/me/events?access_token={token}") as events:
        await stock.settle(
            sale_id=sale_id, order_id=order_id, user_id="carol", qty=1,
            status=OrderStatus.FAILED, failure_reason="card_declined",
        )  # fmt: skip
        got = await events.next(within_s=2)

    assert got.data["status"] == "failed"
    assert got.data["failure_reason"] == "card_declined"


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer not-a-jwt", "Basic YWxpY2U6cHc=", "Bearer {wrong_secret}", "Bearer {expired}"],
)
async def test_me_events_refuse_a_missing_or_bad_token(
    http: httpx.AsyncClient, sse: Sse, authorization: str | None
) -> None:
    wrong = config.AuthSettings(jwt_secret="another-secret-of-at-least-32-characters!")
    bad = {
        "wrong_secret": tokens.mint(wrong, user_id="alice"),
        "expired": tokens.mint(sse.settings.auth, user_id="alice", ttl_s=-120),
    }
    headers = {"Authorization": authorization.format(**bad)} if authorization else {}

    response = await http.get("/v1/me/events", headers=headers)

    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "unauthenticated"
    assert response.headers["www-authenticate"] == "Bearer"


# --- bounds, health, metrics ----------------------------------------------------------------------


async def test_streams_per_address_and_per_process_are_bounded(
    stores: Any, stock: RedisStock
) -> None:
    sale_id = await create_sale(stock)
    with running_sse(stores.redis_url, max_clients_per_addr=2, max_clients=3) as small:
        async with httpx.AsyncClient(base_url=small.url, timeout=10) as client:
            await wait_ready(client)
            path = f"/v1/sales/{sale_id}/events"
            async with stream(client, path) as first, stream(client, path):
                await first.next()
                refused = await client.get(path)
                assert refused.status_code == 429
                assert refused.json()["code"] == "too_many_connections"
                assert refused.headers["retry-after"] == "5"
            # The slots are free again as soon as the server has seen the streams close.
            async for attempt in AsyncRetrying(
                stop=stop_after_delay(2), wait=wait_fixed(0.02), reraise=True
            ):
                with attempt:
                    async with stream(client, path) as again:
                        assert (await again.next()).name == "sale"

            # A second address (127.0.0.2, also loopback) hits the process bound instead.
            transport = httpx.AsyncHTTPTransport(local_address="127.0.0.2")
            async with (
                httpx.AsyncClient(base_url=small.url, transport=transport) as other,
                stream(client, path),
                stream(client, path),
                stream(other, path),
            ):
                full = await other.get(path)
            assert full.status_code == 503
            assert full.json()["code"] == "overloaded"
            assert full.headers["retry-after"] == "5"


async def test_health_readiness_and_metrics(http: httpx.AsyncClient, stock: RedisStock) -> None:
    assert (await http.get("/healthz")).json() == {"status": "ok"}
    assert (await http.get("/readyz")).json() == {"status": "ready"}
    sale_id = await create_sale(stock)

    async with stream(http, f"/v1/sales/{sale_id}/events") as events:
        await events.next()
        await reserve(stock, sale_id, "u1")
        await events.next()
        text = (await http.get("/metrics")).text

    for needle in (
        'flashsale_sse_clients{stream="sale"}',
        'flashsale_sse_clients{stream="me"}',
        'flashsale_sse_events_total{type="stock"}',
        'flashsale_sse_events_total{type="sale"}',
        "flashsale_sse_coalesced_updates_total",
        "flashsale_sse_fanout_seconds_bucket",
        "flashsale_sse_redis_subscribed 1.0",
    ):
        assert needle in text, needle
    prefix = 'flashsale_sse_clients{stream="sale"}'
    sale_clients = next(line for line in text.splitlines() if line.startswith(prefix))
    assert float(sale_clients.split()[-1]) >= 1


async def test_a_shutdown_ends_open_streams_at_once(stores: Any, stock: RedisStock) -> None:
    sale_id = await create_sale(stock)
    server_running = contextlib.ExitStack()
    sse = server_running.enter_context(running_sse(stores.redis_url))
    try:
        async with httpx.AsyncClient(base_url=sse.url, timeout=10) as client:
            await wait_ready(client)
            async with stream(client, f"/v1/sales/{sale_id}/events") as events:
                await events.next()
                started = time.monotonic()
                server_running.close()  # what SIGTERM does: uvicorn's shutdown
                stopped_s = time.monotonic() - started
                with pytest.raises(EOFError):
                    await events.next(within_s=2)
    finally:
        server_running.close()

    # Well under the graceful-shutdown bound, which only a client that stopped reading would hit.
    assert stopped_s < server.GRACEFUL_SHUTDOWN_S / 2


# --- Redis going away -----------------------------------------------------------------------------


@pytest.fixture
def own_valkey() -> Iterator[EmbeddedValkey]:
    """A Valkey of this test's own, so a restart does not disturb the shared one."""
    root = Path(tempfile.mkdtemp(prefix="flashsale-sse-"))
    valkey = EmbeddedValkey(root, free_port()).start()
    try:
        yield valkey
    finally:
        valkey.stop()
        shutil.rmtree(root, ignore_errors=True)


async def test_after_a_redis_restart_clients_get_a_fresh_snapshot(
    own_valkey: EmbeddedValkey,
) -> None:
    store = RedisStock(connect(config.RedisSettings(url=own_valkey.url)), api=NO_LIMITS)
    try:
        sale_id = await create_sale(store)
        with running_sse(own_valkey.url, heartbeat_s=0.5) as sse:
            async with httpx.AsyncClient(base_url=sse.url, timeout=10) as client:
                await wait_ready(client)
                async with stream(client, f"/v1/sales/{sale_id}/events") as events:
                    await events.next()
                    own_valkey.stop()
                    assert (await client.get("/readyz")).status_code == 503
                    own_valkey.start()
                    await store.client.connection_pool.disconnect()
                    await reserve(store, sale_id, "u1")  # may land before we re-subscribed

                    got = await events.until("sale", within_s=10)
                    if got[-1].data["remaining"] != 9:  # the snapshot predates the reservation
                        got.append(await events.next(within_s=2))
                    await wait_ready(client)

        assert got[-1].data["remaining"] == 9
        assert any(e.name == "sale" for e in got)
    finally:
        await store.client.aclose()
