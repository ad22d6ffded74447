"""The SSE feed (sse/feed.py) against a scripted subscription and sale reader: routing of sale and
order messages, one hub per sale, heartbeats, token expiry, and the reconnect that re-reads every
sale and tells every client. No I/O: the Redis side is a queue."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, cast

import pytest

from flashsale import config, errors
from flashsale.domain.sales import SaleSnapshot
from flashsale.sse import clients, feed
from flashsale.sse.subscription import ORDER, SALE, Message


class FakeSubscription:
    def __init__(self) -> None:
        self.inbox: asyncio.Queue[Message | Exception] = asyncio.Queue()
        self.opens = 0

    async def open(self) -> None:
        self.opens += 1

    async def next(self, wait_s: float) -> Message | None:
        try:
            item = await asyncio.wait_for(self.inbox.get(), wait_s)
        except TimeoutError:
            return None
        if isinstance(item, Exception):
            raise item
        return item

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def aclose(self) -> None:
        return None


class FakeStock:
    def __init__(self) -> None:
        now = datetime.now(UTC)
        self.sales = {
            "s1": SaleSnapshot("s1", "Shoe", Decimal("5.00"), 10, 10, now - timedelta(minutes=1),
                               now + timedelta(minutes=5), 1, seq=1)
        }  # fmt: skip
        self.reads = 0

    async def get_sale(self, sale_id: str) -> SaleSnapshot:
        self.reads += 1
        try:
            return self.sales[sale_id]
        except KeyError:
            raise errors.SaleNotFound() from None


@pytest.fixture
async def running() -> AsyncIterator[tuple[feed.Feed, FakeSubscription, FakeStock]]:
    settings = config.Settings(sse=config.SseSettings(heartbeat_s=0.16, coalesce_ms=0))
    subscription, stock = FakeSubscription(), FakeStock()
    the_feed = feed.Feed(settings, stock=cast(Any, stock), subscription=cast(Any, subscription))
    the_feed.start()
    try:
        await _until(lambda: the_feed.subscribed)
        yield the_feed, subscription, stock
    finally:
        await the_feed.stop()


async def _until(condition: Any, within_s: float = 1.0) -> None:
    deadline = time.monotonic() + within_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.005)


def _sale_message(data: str) -> Message:
    return Message(SALE, "fs:{s1}:events", data)


async def test_one_read_per_sale_and_messages_reach_its_clients(
    running: tuple[feed.Feed, FakeSubscription, FakeStock],
) -> None:
    the_feed, subscription, stock = running
    first = await the_feed.join_sale("s1", addr="a")
    second = await the_feed.join_sale("s1", addr="b")
    for client in (first, second):
        assert client.take(0).startswith(b"event: sale\nid: 1\n")

    await subscription.inbox.put(_sale_message('{"type":"stock","remaining":9,"seq":2}'))
    await _until(lambda: second.take(0).startswith(b"event: stock\nid: 2\n"))

    assert stock.reads == 1
    with pytest.raises(errors.SaleNotFound):
        await the_feed.join_sale("nope", addr="a")


async def test_the_last_client_closes_the_hub(
    running: tuple[feed.Feed, FakeSubscription, FakeStock],
) -> None:
    the_feed, _, stock = running
    client = await the_feed.join_sale("s1", addr="a")
    the_feed.leave(client)
    await the_feed.join_sale("s1", addr="a")

    assert stock.reads == 2  # the second client found no hub and read the sale again


async def test_order_events_go_to_that_user_only(
    running: tuple[feed.Feed, FakeSubscription, FakeStock],
) -> None:
    the_feed, subscription, _ = running
    mine = the_feed.join_orders(user_id="u1", addr="a", expires_at=time.time() + 60)
    other = the_feed.join_orders(user_id="u2", addr="a", expires_at=time.time() + 60)

    await subscription.inbox.put(
        Message(ORDER, "fs:events:orders",
                '{"user_id":"u1","order_id":"o1","sale_id":"s1","status":"confirmed",'
                '"failure_reason":null}')
    )  # fmt: skip
    await subscription.inbox.put(Message(ORDER, "fs:events:orders", "not json"))
    await _until(lambda: subscription.inbox.empty())
    await asyncio.sleep(0.01)

    assert b'"order_id":"o1"' in mine.take(0)
    assert other.take(0) == b""


async def test_heartbeats_reach_every_client_and_expired_tokens_end(
    running: tuple[feed.Feed, FakeSubscription, FakeStock],
) -> None:
    the_feed, _, _ = running
    sale_client = await the_feed.join_sale("s1", addr="a")
    sale_client.take(0)
    expired = the_feed.join_orders(user_id="u1", addr="a", expires_at=time.time() - 1)

    await asyncio.wait_for(sale_client.wait(), 1)
    await asyncio.wait_for(expired.wait(), 1)

    assert sale_client.take(0) == b": hb\n\n"
    expired.take(0)
    assert expired.finished


async def test_after_a_lost_subscription_every_client_gets_a_fresh_snapshot(
    running: tuple[feed.Feed, FakeSubscription, FakeStock],
) -> None:
    the_feed, subscription, stock = running
    sale_client = await the_feed.join_sale("s1", addr="a")
    sale_client.take(0)
    order_client = the_feed.join_orders(user_id="u1", addr="a", expires_at=time.time() + 60)
    # While we are deaf, the stock moves.
    stock.sales["s1"] = dataclasses.replace(stock.sales["s1"], remaining=4, seq=7)

    await subscription.inbox.put(errors.StoreUnavailable("connection reset"))
    await _until(lambda: subscription.opens == 2 and the_feed.subscribed)
    await asyncio.wait_for(sale_client.wait(), 1)

    body = sale_client.take(0)
    assert body.startswith(b"event: sale\nid: 7\n")
    assert b'"remaining":4' in body
    assert order_client.take(0).startswith(b"event: resync\n")


async def test_a_deleted_message_ends_the_sale_streams(
    running: tuple[feed.Feed, FakeSubscription, FakeStock],
) -> None:
    the_feed, subscription, stock = running
    client = await the_feed.join_sale("s1", addr="a")
    client.take(0)
    del stock.sales["s1"]

    await subscription.inbox.put(_sale_message('{"type":"deleted"}'))
    await asyncio.wait_for(client.wait(), 1)

    assert client.take(0).endswith(b'data: {"sale_id":"s1"}\n\n')
    assert client.finished
    assert isinstance(client, clients.SaleClient)
