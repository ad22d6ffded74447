"""The operations dashboard's data over real HTTP: every process's metrics beacon in real Redis, the
admin-only GET /v1/admin/dashboard/events aggregating them, with the real API, SSE server, workers
and mock gateway running (each in a thread of this process, as the other integration tests do).

Covers who may read the stream, what one `metrics` event holds while purchases happen (rates,
percentiles, lag, payments, SSE clients, per-sale units) and the beacon's own lifecycle (its key,
TTL and index; gone at stop; quiet without Redis)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import orjson
import pytest
import redis.asyncio as aioredis

from flashsale.adapters import beacon
from flashsale.adapters import redis_keys as keys
from flashsale.config import RedisSettings, Settings
from flashsale.local.embedded import Stores, free_port
from flashsale.sse import server
from flashsale.testing import ServerThread, bearer, buy, create_sale, make_settings

EVENTS = "/v1/admin/dashboard/events"


@contextlib.contextmanager
def running_sse(settings: Settings) -> Iterator[str]:
    """The SSE server as `python -m flashsale.sse` builds it, on settings.sse.port, in a thread."""
    with ServerThread(port=settings.sse.port, server=server.build_server(settings)) as running:
        yield running.url


@pytest.fixture
def settings(clean: Stores) -> Settings:
    """The root fixture's settings, with the SSE server's URL on its own free port (the pages and
    the api's config read it)."""
    port = free_port()
    return make_settings(clean, sse={"port": port, "url": f"http://127.0.0.1:{port}"})


@pytest.fixture
def sse(settings: Settings) -> Iterator[str]:
    with running_sse(settings) as url:
        yield url


async def metrics_events(
    client: httpx.AsyncClient, headers: dict[str, str], **params: str
) -> AsyncIterator[dict[str, Any]]:
    """The `metrics` events of one dashboard stream, decoded."""
    async with client.stream("GET", EVENTS, headers=headers, params=params) as response:
        assert response.status_code == 200, await response.aread()
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["x-accel-buffering"] == "no"
        event = ""
        async for line in response.aiter_lines():
            if line.startswith("event: "):
                event = line[len("event: ") :]
            elif line.startswith("data: ") and event == "metrics":
                yield orjson.loads(line[len("data: ") :])


async def first_event_where(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    check: Callable[[dict[str, Any]], bool],
    *,
    within_s: float = 12.0,
    **params: str,
) -> dict[str, Any]:
    last: dict[str, Any] = {}
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(within_s):
            async for doc in metrics_events(client, headers, **params):
                last = doc
                if check(doc):
                    return doc
    raise AssertionError(f"no metrics event matched within {within_s} s; last: {last}")


async def test_only_an_admin_reads_the_dashboard_stream(
    client: httpx.AsyncClient, settings: Settings, admin_headers: dict[str, str]
) -> None:
    user = bearer(settings, "user-1")["Authorization"].removeprefix("Bearer ")
    admin = admin_headers["Authorization"].removeprefix("Bearer ")
    assert (await client.get(EVENTS)).json()["code"] == "unauthenticated"
    assert (await client.get(EVENTS, params={"access_token": "nope"})).status_code == 401
    forbidden = await client.get(EVENTS, params={"access_token": user})
    assert (forbidden.status_code, forbidden.json()["code"]) == (403, "forbidden")
    forbidden = await client.get(EVENTS, headers={"Authorization": f"Bearer {user}"})
    assert forbidden.status_code == 403
    bad_sale = await client.get(EVENTS, params={"access_token": admin, "sale": "No_Such"})
    assert (bad_sale.status_code, bad_sale.json()["code"]) == (404, "sale_not_found")
    # The query token works where a browser's EventSource cannot send a header.
    async with asyncio.timeout(5):
        async for doc in metrics_events(client, {}, access_token=admin):
            assert set(doc) >= {"t", "processes", "purchases", "ack_ms", "queue_lag", "sales"}
            break


@pytest.mark.usefixtures("workers", "sse")
async def test_one_event_aggregates_every_process_while_purchases_happen(
    client: httpx.AsyncClient, settings: Settings, admin_headers: dict[str, str]
) -> None:
    sale_id = await create_sale(client, admin_headers, stock=30)

    def every_kind(doc: dict[str, Any]) -> bool:
        return set(doc["processes"]) >= {"api", "sse", "order", "payment", "gateway"}

    await first_event_where(client, admin_headers, every_kind)

    # Rates come from the beats one stream sees (its aggregator starts with the stream), and
    # percentiles cover the last few seconds, while the sale's units come from the stores: so the
    # stream is opened before the purchases, and each fact is looked for on its own (payments may
    # settle every order after the purchases have left the window, on a busy machine).
    seen: dict[str, dict[str, Any]] = {}
    watching = asyncio.Event()

    def busy(doc: dict[str, Any]) -> bool:
        watching.set()
        sale = next((s for s in doc["sales"] if s["sale_id"] == sale_id), None)
        if doc["purchases"].get("reserved", 0) > 0 and doc["purchases"].get("sold_out", 0) > 0:
            seen.setdefault("purchases", doc)
        if doc["ack_ms"]["p99"] is not None:
            seen.setdefault("ack", doc)
        if doc["payments"].get("succeeded", 0) > 0:
            seen.setdefault("payments", doc)
        if sale is not None and sale["confirmed"] == 30:
            seen.setdefault("settled", doc)
        return len(seen) == 4

    watch = asyncio.create_task(
        first_event_where(client, admin_headers, busy, within_s=30.0, sale=sale_id)
    )
    async with asyncio.timeout(10):
        await watching.wait()
    answers = await asyncio.gather(
        *(buy(client, settings, sale_id, f"user-{i}", f"k-{i}") for i in range(40))
    )
    assert sorted(r.status_code for r in answers) == [202] * 30 + [409] * 10
    await watch
    doc = seen["settled"]
    assert doc["focus"] == sale_id
    assert doc["error"] is None
    assert doc["sales"] == [
        {
            "sale_id": sale_id,
            "name": "Test sneaker",
            "state": "sold_out",
            "initial_stock": 30,
            "remaining": 0,
            "pending": 0,
            "confirmed": 30,
            "failed": 0,
            "needs_reconciliation": 0,
        }
    ]
    ack = seen["ack"]["ack_ms"]
    assert 0 < ack["p50"] <= ack["p95"] <= ack["p99"]
    assert set(doc["queue_lag"]) == {"order-workers", "payment-workers"}
    assert "sale" in doc["sse_clients"] or doc["sse_clients"] == {}


async def test_a_beacon_writes_its_key_with_a_ttl_and_deletes_it_at_stop(
    settings: Settings,
) -> None:
    redis = aioredis.Redis.from_url(settings.redis.url, decode_responses=True)
    try:
        running = beacon.start(settings.redis, kind="probe")
        try:
            await running.beat()
            assert 0 < await redis.ttl(running.key) <= beacon.TTL_S
            assert await redis.zscore(keys.BEACONS, running.key) is not None
            docs = [d for d in await beacon.read_live(redis) if d["kind"] == "probe"]
            assert [d["id"] for d in docs] == [beacon.process_id()]
        finally:
            await running.stop()
        assert await redis.exists(running.key) == 0
        assert await redis.zscore(keys.BEACONS, running.key) is None
    finally:
        await redis.aclose()


async def test_a_beacon_without_redis_logs_once_and_stops_cleanly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    nowhere = RedisSettings(url=f"redis://127.0.0.1:{free_port()}/0", socket_timeout_s=0.2)
    running = beacon.Beacon(nowhere, kind="probe", interval_s=0.05).start()
    with caplog.at_level(logging.WARNING, logger="flashsale.adapters.beacon"):
        await asyncio.sleep(0.4)
        await running.stop()
    warnings = [r for r in caplog.records if "cannot write" in r.getMessage()]
    assert len(warnings) == 1


async def test_the_pages_config_names_the_sse_server_and_the_sale_on_now(
    client: httpx.AsyncClient, settings: Settings, admin_headers: dict[str, str]
) -> None:
    empty = (await client.get("/v1/pages/config")).json()
    assert empty == {"sse_url": settings.sse.url, "sale_id": None}
    later = await create_sale(client, admin_headers, stock=5, opens_in_s=600)
    assert (await client.get("/v1/pages/config")).json()["sale_id"] == later
    now = await create_sale(client, admin_headers, stock=5)
    assert (await client.get("/v1/pages/config")).json()["sale_id"] == now


async def test_pages_and_their_files_are_served_with_a_strict_policy(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    for path in ("/", "/dashboard"):
        page = await client.get(path)
        assert page.status_code == 200
        assert page.headers["content-type"] == "text/html; charset=utf-8"
        policy = page.headers["content-security-policy"]
        assert "script-src 'self';" in policy
        assert "'unsafe-inline'" not in policy
        assert f"connect-src 'self' {settings.sse.url}" in policy
        assert '<script type="module"' in page.text
        assert " on" not in page.text.split("<body")[1]
    script = await client.get("/static/buyer.js")
    assert script.headers["content-type"] == "text/javascript; charset=utf-8"
    for missing in ("/static/nope.js", "/static/..%2Fapp.py", "/static/README"):
        response = await client.get(missing)
        assert (response.status_code, response.json()["code"]) == (404, "not_found")


def test_in_a_cluster_the_browser_uses_the_page_origin_for_sse(stores: Stores) -> None:
    from flashsale.api.routes.pages import browser_sse_url, security_headers

    cluster = make_settings(stores, sse={"url": "http://flashsale-sse:8001"})
    assert browser_sse_url(cluster) == ""
    assert "connect-src 'self';" in security_headers(cluster)["Content-Security-Policy"]


def test_demo_prints_the_pages_and_lingers_unless_told_not_to(
    capsys: pytest.CaptureFixture[str],
) -> None:
    import argparse

    from flashsale.adapters.tokens import TokenVerifier
    from flashsale.local import demo
    from flashsale.local.stack import Stack, StackOptions

    parser = argparse.ArgumentParser()
    demo.add_arguments(parser)
    assert parser.parse_args([]).no_linger is False
    args = parser.parse_args(["--no-linger"])
    stack = Stack(StackOptions(api_port=18000))
    demo.announce_pages(stack, "demo-x")
    demo.after_report(stack, args)  # returns at once
    out = capsys.readouterr().out
    assert "buyer page: http://127.0.0.1:18000/?sale=demo-x" in out
    dashboard = next(line for line in out.splitlines() if line.startswith("dashboard:"))
    admin = dashboard.split("#token=")[1].strip()
    assert TokenVerifier(stack.settings().auth).verify(admin).is_admin
